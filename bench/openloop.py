"""An open-loop HTTP load process: ``python -m bench.openloop SPEC.json``.

Request n of a step is due at ``t_step + n / rate`` whatever the earlier ones
did (no coordinated omission): a due request takes an idle keep-alive
connection, opens a new one up to ``max_connections``, or waits in line; its
latency is counted from the time it was due, so waiting in line shows.

Plain asyncio streams (uvloop when installed) and pre-encoded request bytes:
at 1,500 requests/s this process uses a small share of one core, which matters
on a 2-core machine where it competes with the system under test.

The spec (JSON) names the server, the steps ``[{"rate": r, "seconds": s,
"label": ...}]``, the request templates and the probe: every
``probe_every``-th request of a step is a *probe*, a single event whose
``data`` carries its send time and the step label, addressed to the watched
recipient (the bench's websocket client measures POST -> frame with it).

Output on stdout, JSON lines: ``{"k": "ready"}``, then one ``{"k": "w", ...}``
per ``window`` seconds (due, sent, answers by status, errors, latency
percentiles, requests in line), ``{"k": "step", ...}`` at each step's end and
``{"k": "done"}``. SIGTERM ends it early.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter, deque
from urllib.parse import urlsplit


def _out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return round(values[k] * 1000, 2)


class Window:
    def __init__(self) -> None:
        self.due = 0
        self.sent = 0
        self.status: Counter = Counter()
        self.errors: Counter = Counter()
        self.latencies: list[float] = []
        self.items = 0

    def report(
        self, step: int, label: str, t0: float, t1: float, in_line: int, open_conns: int
    ) -> dict:
        return {
            "k": "w",
            "step": step,
            "label": label,
            "t0": t0,
            "t1": t1,
            "due": self.due,
            "sent": self.sent,
            "status": dict(self.status),
            "errors": dict(self.errors),
            "items": self.items,
            "p50_ms": _pct(self.latencies, 50),
            "p95_ms": _pct(self.latencies, 95),
            "p99_ms": _pct(self.latencies, 99),
            "in_line": in_line,
            "connections": open_conns,
        }


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        lowered = head.lower()
        at = lowered.find(b"content-length:")
        if at >= 0:
            length = int(lowered[at + 15 : lowered.find(b"\r\n", at)].strip())
        body = await self.reader.readexactly(length) if length else b""
        if b"connection: close" in lowered:
            self.writer.close()
            raise ConnectionResetError("server closed the connection")
        return status, body

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass


class Generator:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        parts = urlsplit(spec["base"])
        self.host, self.port = parts.hostname, parts.port
        self.path = spec["path"]
        self.probe_path = spec.get("probe_path", "/api/v1/events")
        self.headers = (
            f"Host: {self.host}:{self.port}\r\nAuthorization: {spec['authorization']}\r\n"
            "Content-Type: application/json\r\n"
        )
        self.bodies = [self._request(self.path, body.encode()) for body in spec["bodies"]]
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.max_connections = spec.get("max_connections", 256)
        self.line: deque = deque()
        self.window = Window()
        self.stopping = False
        self.tasks: set[asyncio.Task] = set()
        self.batch = spec.get("mode") == "batch"

    def _request(self, path: str, body: bytes) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\n{self.headers}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _probe(self, label: str, seq: int) -> bytes:
        body = {
            "type": self.spec["probe_type"],
            "recipients": self.spec["probe_recipients"],
            "actor": "bench",
            "data": {"sent_at": time.time(), "round": label, "seq": seq},
        }
        priority = self.spec.get("probe_priority")
        if priority:
            body["priority"] = priority
        return self._request(self.probe_path, json.dumps(body).encode())

    async def _connection(self) -> Connection | None:
        if self.idle:
            return self.idle.popleft()
        if self.open >= self.max_connections:
            return None
        self.open += 1
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            self.open -= 1
            self.window.errors[f"connect {type(exc).__name__}"] += 1
            return None
        return Connection(reader, writer)

    async def _send(self, request_or_probe, due: float) -> None:
        conn = await self._connection()
        while conn is None:
            if self.open < self.max_connections:  # a connect failed: try again shortly
                await asyncio.sleep(0.05)
            else:
                waiter = asyncio.get_running_loop().create_future()
                self.line.append(waiter)
                conn = await waiter
                if conn is not None:
                    break
            conn = await self._connection()
        request = (
            self._probe(*request_or_probe)
            if isinstance(request_or_probe, tuple)
            else request_or_probe
        )
        self.window.sent += 1
        try:
            status, body = await asyncio.wait_for(
                conn.exchange(request), self.spec.get("timeout", 30)
            )
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as exc:
            self.window.errors[type(exc).__name__] += 1
            conn.close()
            self.open -= 1
            self._hand_over(None)
            return
        # Counted in the window the answer came in (the one reported next).
        self.window.latencies.append(time.time() - due)
        self.window.status[str(status)] += 1
        if self.batch and status in (200, 202, 207):
            self.window.items += body.count(b'"accepted"')
        self._hand_over(conn)

    def _hand_over(self, conn: Connection | None) -> None:
        """A finished request frees its connection for the first one in line."""
        while self.line:
            waiter = self.line.popleft()
            if waiter.done():
                continue
            if conn is None:
                waiter.set_result(None)  # the connection died: the next in line opens a new one
                return
            waiter.set_result(conn)
            return
        if conn is not None:
            self.idle.append(conn)

    async def run(self) -> None:
        window_s = self.spec.get("window", 10.0)
        probe_every = (
            max(1, int(self.spec.get("probe_every", 0) or 0)) if self.spec.get("probe_every") else 0
        )
        seq = 0
        _out({"k": "ready"})
        for index, step in enumerate(self.spec["steps"]):
            rate, seconds, label = float(step["rate"]), float(step["seconds"]), step["label"]
            start = time.time()
            end = start + seconds
            n = 0
            window_start = start
            self.window = Window()
            total = Counter()
            while not self.stopping:
                now = time.time()
                if now >= window_start + window_s or now >= end:
                    _out(
                        self.window.report(
                            index, label, window_start, now, len(self.line), self.open
                        )
                    )
                    total.update(self.window.status)
                    self.window = Window()
                    window_start = now
                if now >= end:
                    break
                due_count = int((now - start) * rate) + 1
                while n < due_count:
                    due = start + n / rate
                    if probe_every and n % probe_every == 0:
                        payload = (label, seq)
                        seq += 1
                    else:
                        payload = self.bodies[n % len(self.bodies)]
                    self.window.due += 1
                    task = asyncio.create_task(self._send(payload, due))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    n += 1
                await asyncio.sleep(min(0.002, max(0.0, start + n / rate - time.time())))
            _out({"k": "step", "step": index, "label": label, "due": n, "status": dict(total)})
            if self.stopping:
                break
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.spec.get("timeout", 30))
        _out({"k": "done"})


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    spec = json.loads(open(sys.argv[1]).read())
    generator = Generator(spec)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(generator, "stopping", True))
        await generator.run()

    asyncio.run(go())


if __name__ == "__main__":
    main()
