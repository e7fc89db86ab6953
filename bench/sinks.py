"""Local provider sinks for the delivery benchmarks (`bench/delivery.py`).

    python -m bench.sinks smtp --port P [--stats-port S] [--fail-every N] [--record]
    python -m bench.sinks http --port P --kind twilio|webhook [--fail-every N]
                               [--fail-header NAME:VALUE] [--secret whsec_...] [--record]

smtp: an aiosmtpd server that takes every message; with `--fail-every N`
it answers `451` at DATA to every Nth message (a temporary refusal: the
provider retries it, through the next provider of the chain).
http: an aiohttp server answering Twilio's Messages API
(`POST /2010-04-01/Accounts/{sid}/Messages.json` -> 201 and the message
resource with its `sid`) or, for webhooks, any POST with 200; with
`--fail-every N` every Nth call is answered 503. `--fail-header` counts
only the calls carrying that header toward N (the others always pass): the
webhook channel has one destination whatever the provider, so the bench
marks its first provider's calls to fail only those. `--secret` checks the
Standard Webhooks signature of every webhook call (counted, never refused).

Both print `SINK READY {"port": P, "stats_port": S}` once listening, or
`SINK ERROR ...` and exit 2 when they cannot listen (e.g. the port is busy).
`GET /_stats` (on the HTTP port, or the SMTP sink's stats port) answers the
counts; with `--record`, `GET /_arrivals` answers `[[delivery id, epoch
seconds], ...]` of every accepted message (the SMTP sink reads
`X-Clarion-Delivery`; HTTP sinks the `Idempotency-Key`), for latencies.

No Django here: a sink is a separate process, started and stopped by the
bench (bench/procs.py REGISTRY), so its CPU is accounted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qsl

HOST = "127.0.0.1"
_DELIVERY_HEADER = re.compile(rb"^X-Clarion-Delivery:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)
_IDEMPOTENCY_ID = re.compile(r"(\d+)$")
_TWILIO_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")


@dataclass
class Stats:
    kind: str
    fail_every: int = 0
    calls: int = 0  # messages at DATA / HTTP requests (stats endpoints excluded)
    accepted: int = 0
    refused: int = 0  # answered 451 / 503 on purpose
    counted_for_failure: int = 0  # calls that count toward --fail-every (all, or the marked)
    connections: int = 0
    signature_ok: int = 0
    signature_bad: int = 0
    first_at: float | None = None
    last_at: float | None = None
    arrivals: list[tuple[int, float]] = field(default_factory=list)

    def take(self, *, counted: bool = True) -> bool:
        """Count one call; True when it is to be refused (every Nth counted one)."""
        now = time.time()
        self.calls += 1
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        if not counted or not self.fail_every:
            return False
        self.counted_for_failure += 1
        return self.counted_for_failure % self.fail_every == 0

    def public(self) -> dict:
        data = asdict(self)
        data.pop("arrivals")
        data["recorded"] = len(self.arrivals)
        return data


# --------------------------------------------------------------------------- #
# HTTP: stats endpoints (both sinks) and the Twilio / webhook fakes
# --------------------------------------------------------------------------- #


def _stats_routes(app, stats: Stats) -> None:
    from aiohttp import web

    async def get_stats(request):
        return web.json_response(stats.public())

    async def get_arrivals(request):
        return web.json_response(stats.arrivals)

    app.router.add_get("/_stats", get_stats)
    app.router.add_get("/_arrivals", get_arrivals)


def _http_app(stats: Stats, opts):
    from aiohttp import web

    marker = None
    if opts.fail_header:
        name, _, value = opts.fail_header.partition(":")
        marker = (name.strip(), value.strip())
    verifier = None
    if opts.secret:
        from standardwebhooks import Webhook

        verifier = Webhook(opts.secret)
    peers: set = set()

    async def handle(request):
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer not in peers:
            peers.add(peer)
            stats.connections = len(peers)
        counted = marker is None or request.headers.get(marker[0]) == marker[1]
        if verifier is not None:
            try:
                verifier.verify(body, dict(request.headers))
                stats.signature_ok += 1
            except Exception:  # noqa: BLE001 - any failure to verify is a bad signature
                stats.signature_bad += 1
        if stats.take(counted=counted):
            stats.refused += 1
            if opts.kind == "twilio":
                return web.json_response(
                    {"code": 20500, "message": "Service unavailable (bench sink)", "status": 503},
                    status=503,
                )
            return web.Response(status=503, text="unavailable (bench sink)")
        if opts.kind == "twilio":
            match = _TWILIO_PATH.match(request.path)
            if request.method != "POST" or match is None:
                return web.json_response(
                    {"code": 20404, "message": "The requested resource was not found"}, status=404
                )
            form = dict(parse_qsl(body.decode("utf-8", "replace")))
            sid = "SM" + uuid.uuid4().hex
            answer = web.json_response(
                {
                    "sid": sid,
                    "account_sid": match.group(1),
                    "to": form.get("To", ""),
                    "from": form.get("From", ""),
                    "messaging_service_sid": form.get("MessagingServiceSid"),
                    "body": form.get("Body", ""),
                    "status": "queued",
                    "num_segments": "1",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "uri": f"/2010-04-01/Accounts/{match.group(1)}/Messages/{sid}.json",
                },
                status=201,
            )
        else:
            answer = web.json_response({"ok": True})
        stats.accepted += 1
        if opts.record:
            found = _IDEMPOTENCY_ID.search(request.headers.get("Idempotency-Key", ""))
            if found:
                stats.arrivals.append((int(found.group(1)), stats.last_at or time.time()))
        return answer

    app = web.Application(client_max_size=1024 * 1024)
    _stats_routes(app, stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _serve_app(app, port: int):
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, reuse_address=True, backlog=1024)
    await site.start()
    return runner


# --------------------------------------------------------------------------- #
# SMTP
# --------------------------------------------------------------------------- #


class _SmtpHandler:
    def __init__(self, stats: Stats, record: bool):
        self.stats = stats
        self.record = record

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.stats.take():
            self.stats.refused += 1
            return "451 4.3.0 Temporarily unavailable (bench sink)"
        self.stats.accepted += 1
        if self.record:
            content = envelope.original_content or envelope.content or b""
            if isinstance(content, str):
                content = content.encode("utf-8", "replace")
            head = content.split(b"\r\n\r\n", 1)[0]
            found = _DELIVERY_HEADER.search(head)
            if found:
                self.stats.arrivals.append((int(found.group(1)), self.stats.last_at or 0.0))
        return "250 2.0.0 OK"


async def _serve_smtp(stats: Stats, opts):
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = _SmtpHandler(stats, opts.record)

    def factory():
        stats.connections += 1
        # A fixed hostname: aiosmtpd would otherwise resolve the FQDN per connection.
        return SMTP(handler, hostname="bench-sink", ident="bench-sink", loop=loop)

    return await loop.create_server(factory, HOST, opts.port, reuse_address=True, backlog=1024)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


async def _main(opts) -> int:
    stats = Stats(kind="smtp" if opts.command == "smtp" else opts.kind, fail_every=opts.fail_every)
    closers = []
    try:
        if opts.command == "smtp":
            from aiohttp import web

            server = await _serve_smtp(stats, opts)
            closers.append(server.close)
            stats_port = opts.stats_port or _free_port()
            stats_app = web.Application()
            _stats_routes(stats_app, stats)
            runner = await _serve_app(stats_app, stats_port)
        else:
            stats_port = opts.port
            runner = await _serve_app(_http_app(stats, opts), opts.port)
    except OSError as exc:
        print(
            f"SINK ERROR: cannot listen on {HOST}:{opts.port}"
            f"{f' / stats {opts.stats_port}' if opts.command == 'smtp' and opts.stats_port else ''}"
            f" ({exc}); is the port busy?",
            flush=True,
        )
        return 2
    print("SINK READY " + json.dumps({"port": opts.port, "stats_port": stats_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for close in closers:
        close()
    await runner.cleanup()
    print("SINK STOPPED " + json.dumps(stats.public()), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sinks", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("smtp", "http"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--fail-every", type=int, default=0, metavar="N")
        p.add_argument("--record", action="store_true", help="keep each message's arrival time")
        if name == "smtp":
            p.add_argument("--stats-port", type=int, default=0, help="default: a free port")
        else:
            p.add_argument("--kind", choices=["twilio", "webhook"], required=True)
            p.add_argument("--fail-header", default="", metavar="NAME:VALUE")
            p.add_argument("--secret", default="", help="check Standard Webhooks signatures")
    opts = parser.parse_args(argv)
    try:
        import uvloop  # noqa: F401 - faster when installed; asyncio's loop otherwise

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_main(opts))


if __name__ == "__main__":
    sys.exit(main())
