"""A local webhook receiver: a threaded HTTP/1.1 server on 127.0.0.1 that
records every request (headers and raw body) and answers what the test
set up, for the webhook channel's and the status webhooks' tests.

Receivers verify Standard Webhooks signatures themselves with
`standardwebhooks.Webhook(secret).verify(body, headers)`; `verify()` does
that for every recorded request. TCP connections are counted, so a test
can tell keep-alive from a connection per call, and so are the most
requests in flight at once (with `delay`, concurrency shows).

Answers: `answer(status, body=..., headers=...)` for every request from
now on, `answer_next([...])` for the next few (then the default again).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

from tests.fakes import ThreadedHttpFake


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: tuple[tuple[str, str], ...] = ()


class WebhookReceiver(ThreadedHttpFake):
    """Start with `with WebhookReceiver() as receiver:`; `receiver.url("/path")`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host  # "::1" for an IPv6 receiver
        self.requests: list[Received] = []
        self.connections = 0
        self.delay = 0.0  # seconds before every answer
        self.in_flight = 0
        self.most_in_flight = 0
        self._default = Answer()
        self._next: deque[Answer] = deque()
        self._lock = threading.Lock()

    # --- set-up ---------------------------------------------------------------

    def answer(self, status: int, *, body: bytes = b"", headers: dict | None = None) -> None:
        with self._lock:
            self._default = Answer(status, body, tuple((headers or {}).items()))

    def answer_next(self, answers: list[Answer]) -> None:
        with self._lock:
            self._next.extend(answers)

    # --- reading --------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def verify(self, secret: str) -> list[object]:
        """Every request's body, each verified with `secret` (raises if one is not)."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.requests]

    # --- running --------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver.connections += 1

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            "POST",
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    answer = receiver._next.popleft() if receiver._next else receiver._default
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.in_flight -= 1
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that timed out and left: not the test's failure

        self._serve(Server((self.host, 0), Handler), "webhook-receiver")
        return self
