"""A websocket client process for the realtime scenarios: ``python -m bench.wsclients SPEC.json``.

The bench starts several of these (through ``procs.REGISTRY``, so they die with
it) and talks to them with signals and JSON lines:

* the process prints ``{"k": "ready"}`` and waits;
* SIGUSR1 #1: open every connection of the spec (``/ws/inbox/?token=...``,
  Origin = the server's http origin, at most ``concurrency`` handshakes in
  flight), wait for each socket's first frame (``unread_count``: the consumer
  accepted and authenticated it), print ``{"k": "connected", ...}``;
* while connected, depending on ``mode``:
  - ``idle``: nothing; a socket the server closes is reported (``dropped``);
  - ``fanout``: every ``notification`` frame is printed with its receive time;
  - ``latency``: the same, and each socket follows the protocol like the bell
    (``tests.wsclient.InboxSocket``): a frame whose ``previous_id`` shows a gap
    makes it send ``resume`` (``"resume": false`` in the spec: passive sockets
    that never resume while running);
* SIGUSR1 #2: (latency mode: a final ``resume`` on every socket first, to count
  what never arrived) close every socket at once, print ``{"k": "closed", ...}``
  and exit.

Times are ``time.time()`` (same host as the bench, so comparable across processes).
Its stderr goes to ``spec["log"]``; stdout carries only the JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections import Counter


def _out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _error_name(exc: BaseException) -> str:
    name = type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        name += f" {status}"
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        name += f" close {rcvd.code}"
    if isinstance(exc, OSError) and exc.errno:
        name += f" errno {exc.errno}"
    return name


class Client:
    def __init__(self, spec: dict):
        self.spec = spec
        self.mode = spec["mode"]
        self.conns: dict[int, object] = {}  # index -> connection
        self.sockets: dict[int, object] = {}  # index -> InboxSocket (latency mode)
        self.readers: list[asyncio.Task] = []
        self.closing = False
        self.phase = 0
        self.phase_events: list[asyncio.Event] = []
        self.resumed: dict[int, asyncio.Event] = {}
        self.compression: Counter = Counter()

    def on_signal(self) -> None:
        if self.phase < len(self.phase_events):
            self.phase_events[self.phase].set()
            self.phase += 1

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self.phase_events = [asyncio.Event(), asyncio.Event()]
        loop.add_signal_handler(signal.SIGUSR1, self.on_signal)
        _out({"k": "ready", "pid": os.getpid()})
        await self.phase_events[0].wait()
        await self.connect_all()
        await self.phase_events[1].wait()
        if self.mode == "latency":
            await self.final_resume()
        await self.close_all()

    # --- connect ------------------------------------------------------------
    async def connect_all(self) -> None:
        from websockets.asyncio.client import connect

        spec = self.spec
        sem = asyncio.Semaphore(spec["concurrency"])
        timeout = spec.get("open_timeout", 30.0)
        errors: Counter = Counter()
        durations: list[float] = []
        t_start = time.time()

        async def one(index: int, token: str) -> None:
            async with sem:
                t0 = time.time()
                try:
                    ws = await connect(
                        f"{spec['ws_url']}?token={token}",
                        origin=spec["origin"],
                        open_timeout=timeout,
                        close_timeout=30,
                        max_queue=64,
                    )
                except Exception as exc:  # noqa: BLE001 - counted
                    errors[_error_name(exc)] += 1
                    return
                try:
                    first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                except Exception as exc:  # noqa: BLE001
                    errors[f"first frame: {_error_name(exc)}"] += 1
                    await ws.close()
                    return
                if first.get("type") != "unread_count":
                    errors[f"first frame {first.get('type')}"] += 1
                    await ws.close()
                    return
                durations.append(time.time() - t0)
                self.compression[
                    ws.response.headers.get("Sec-WebSocket-Extensions", "") or "none"
                ] += 1
                self.conns[index] = ws
                self.readers.append(asyncio.create_task(self.reader(index, ws)))
                if self.mode != "idle" and spec.get("ping_seconds", 25):
                    self.readers.append(
                        asyncio.create_task(self.pinger(ws, float(spec.get("ping_seconds", 25))))
                    )

        base = spec.get("index_base", 0)
        await asyncio.gather(*(one(base + i, token) for i, token in enumerate(spec["tokens"])))
        _out(
            {
                "k": "connected",
                "ok": len(self.conns),
                "failed": sum(errors.values()),
                "errors": dict(errors),
                "t_start": t_start,
                "t_end": time.time(),
                "handshake_s": [round(d, 5) for d in durations],
                "extensions": dict(self.compression),
            }
        )

    # --- while connected ----------------------------------------------------
    async def pinger(self, ws, every: float) -> None:
        """Ping like the bell (PING_MS): presence expires after 90 s without a
        client frame, and a socket nobody knows is online gets no pushes."""
        try:
            while True:
                await asyncio.sleep(every)
                await ws.send(json.dumps({"type": "ping"}))
        except Exception:  # noqa: BLE001 - the socket closed: the reader reports it
            return

    async def reader(self, index: int, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        socket = None
        if self.mode == "latency":
            from tests.wsclient import InboxSocket

            socket = InboxSocket(
                ws, gap_grace=float(self.spec.get("gap_grace", 0.3))
            )  # as the bell
            if not self.spec.get("resume", True):
                # Passive: never resume while running (InboxSocket only resumes when not
                # already resuming); one final resume at the end still counts what is missing.
                socket.resuming = True
            resume_now = socket._resume_now

            async def traced_resume(socket=socket, resume_now=resume_now) -> None:
                _out({"k": "resume", "c": index, "t": time.time(), "after": socket.last_id})
                await resume_now()

            socket._resume_now = traced_resume  # every resume, immediate or after the gap grace
            self.sockets[index] = socket
            self.resumed[index] = asyncio.Event()
        try:
            while True:
                if self.mode == "idle":
                    await ws.wait_closed()
                    break
                raw = await ws.recv()
                t = time.time()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "notification":
                    item = frame["notification"]
                    data = item.get("data") or {}
                    record = {
                        "k": "f",
                        "c": index,
                        "t": t,
                        "id": item["id"],
                        "prev": frame.get("previous_id"),
                        "seq": data.get("seq"),
                        "sent": data.get("sent_at"),
                        "round": data.get("round"),
                    }
                    if socket is not None:
                        # arrived while a resume was outstanding (passive sockets: never)
                        record["rw"] = socket.resuming and self.spec.get("resume", True)
                        record["final"] = self.phase >= 2
                    _out(record)
                if socket is not None:
                    await socket.handle(frame)
                    if kind == "resumed":
                        self.resumed[index].set()
        except ConnectionClosed as exc:
            if not self.closing:
                _out(
                    {
                        "k": "dropped",
                        "c": index,
                        "t": time.time(),
                        "code": getattr(exc.rcvd, "code", None),
                    }
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            _out({"k": "reader_error", "c": index, "error": _error_name(exc)})
        if self.mode == "idle" and not self.closing:
            code = ws.close_code
            _out({"k": "dropped", "c": index, "t": time.time(), "code": code})

    async def final_resume(self) -> None:
        """Ask every socket for what it has not seen; wait for the `resumed` answers."""
        t0 = time.time()
        waiting = []
        for index, socket in self.sockets.items():
            self.resumed[index].clear()
            socket.resuming = True
            try:
                await socket.send({"type": "resume", "after": socket.last_id})
                waiting.append(self.resumed[index].wait())
            except Exception:  # noqa: BLE001
                continue
        if waiting:
            try:
                await asyncio.wait_for(asyncio.gather(*waiting), 30)
            except TimeoutError:
                pass
        _out(
            {
                "k": "final_resume",
                "seconds": round(time.time() - t0, 3),
                "sockets": {
                    str(i): {"gaps": s.gaps, "last_id": s.last_id, "unread": s.unread}
                    for i, s in self.sockets.items()
                },
            }
        )

    # --- close --------------------------------------------------------------
    async def close_all(self) -> None:
        self.closing = True
        t_start = time.time()
        results = await asyncio.gather(
            *(ws.close() for ws in self.conns.values()), return_exceptions=True
        )
        t_end = time.time()
        errors = Counter(_error_name(r) for r in results if isinstance(r, BaseException))
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        _out(
            {
                "k": "closed",
                "n": len(results),
                "errors": dict(errors),
                "t_start": t_start,
                "t_end": t_end,
            }
        )


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    log = open(spec["log"], "ab", buffering=0)
    os.dup2(log.fileno(), 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop  # noqa: F401 - the same loop uvicorn uses; less client CPU on a 2-core box

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(Client(spec).main())


if __name__ == "__main__":
    main()
