"""A local push service (RFC 8030) for the web push provider's tests, with the
browser side of its subscriptions.

`subscribe()` does what `PushManager.subscribe()` does in a browser: a new
P-256 key pair and 16-byte auth secret (RFC 8291 §3.2) and an endpoint on
this server, optionally bound to an `applicationServerKey`. A push message
(`POST /push/{id}`) is checked the way push services check it:

- `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292): the JWT verified as
  ES256 with `k` (PyJWT, independent of the py_vapid that signs), its `aud`
  this server's origin, `exp` in the future and at most 24 hours away; `k`
  equal to the subscription's applicationServerKey when it has one (403);
- `TTL` a non-negative integer, `Urgency` one of RFC 8030's, `Content-Encoding:
  aes128gcm`, a body of at most 4096 bytes (413);
- the body DECRYPTED with the subscription's private key and auth secret
  (http_ece), and the plaintext recorded.

Accepted: 201 with a `Location`. Chosen subscriptions answer 410 (`gone()`),
the next N messages a status with Retry-After (`fail_next()`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes import ThreadedHttpFake

MAX_BODY = 4096
MAX_EXP_SECONDS = 24 * 3600
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_PATH = re.compile(r"/push/([A-Za-z0-9_-]+)")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """A browser's push subscription: its keys stay here, the JSON goes to Clarion."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str = ""

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def as_json(self) -> dict:
        """What `PushSubscription.toJSON()` gives a page."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def target(self) -> str:
        """The subscription as a web push Message target."""
        return json.dumps({"endpoint": self.endpoint, "keys": self.as_json()["keys"]})

    def decrypt(self, body: bytes) -> bytes:
        return http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth_secret, version="aes128gcm"
        )


@dataclass(frozen=True)
class Received:
    """One push message the fake received, and what it made of it."""

    subscription_id: str
    headers: dict[str, str]
    status: int
    error: str = ""
    plaintext: bytes | None = None
    claims: dict | None = None
    vapid_key: str = ""
    at: float = field(default_factory=time.time)

    @property
    def payload(self) -> dict:
        assert self.plaintext is not None, f"not decrypted ({self.status} {self.error})"
        return json.loads(self.plaintext)

    def header(self, name: str) -> str:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered.get(name.lower(), "")


@dataclass
class _Failure:
    status: int
    retry_after: str | None
    remaining: int


class PushServiceFake(ThreadedHttpFake):
    """Start with `with PushServiceFake() as push:` (or start()/stop())."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._subscriptions: dict[str, BrowserSubscription] = {}
        self._gone: set[str] = set()
        self._next: _Failure | None = None
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> PushServiceFake:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._serve(server, "push-service-fake")
        return self

    @property
    def origin(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- the browser side ----------------------------------------------------
    def subscribe(self, *, application_server_key: str = "") -> BrowserSubscription:
        """A new subscription on this service, as a browser would create it."""
        subscription_id = b64url(os.urandom(12))
        subscription = BrowserSubscription(
            endpoint=f"{self.origin}/push/{subscription_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=os.urandom(16),
            application_server_key=application_server_key,
        )
        with self._lock:
            self._subscriptions[subscription_id] = subscription
        return subscription

    def gone(self, subscription: BrowserSubscription) -> None:
        """The browser unsubscribed: its endpoint answers 410 Gone from now on."""
        with self._lock:
            self._gone.add(subscription.endpoint.rsplit("/", 1)[-1])

    def fail_next(self, count: int, *, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next `count` messages with `status` (and Retry-After)."""
        with self._lock:
            self._next = _Failure(status, retry_after, count)

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.status == 201]

    # --- the push service ----------------------------------------------------
    def _answer(self, handler: _Handler) -> tuple[int, str, dict[str, str]]:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        match = _PATH.fullmatch(handler.path)
        subscription_id = match.group(1) if match else ""
        received = self._check(handler, subscription_id, body)
        with self._lock:
            self.received.append(received)
        headers: dict[str, str] = {}
        if received.status == 201:
            headers["Location"] = f"{self.origin}/message/{uuid.uuid4().hex}"
            headers["TTL"] = handler.headers.get("TTL", "0")
        return received.status, received.error, headers

    def _check(self, handler: _Handler, subscription_id: str, body: bytes) -> Received:
        headers = dict(handler.headers.items())

        def refuse(status: int, error: str, **extra) -> Received:
            return Received(subscription_id, headers, status, error, **extra)

        with self._lock:
            subscription = self._subscriptions.get(subscription_id)
            gone = subscription_id in self._gone
            injected = None
            if self._next is not None and self._next.remaining > 0 and subscription and not gone:
                self._next.remaining -= 1
                injected = self._next
        if handler.command != "POST" or subscription is None:
            return refuse(404, "no such subscription")
        if gone:
            return refuse(410, "the subscription has expired or was unsubscribed")
        if injected is not None:
            if injected.retry_after is not None:
                handler.extra_headers["Retry-After"] = injected.retry_after
            return refuse(injected.status, "injected failure")
        claims, key, problem = self._vapid(handler.headers.get("Authorization", ""))
        if problem:
            return refuse(401, problem)
        if subscription.application_server_key and key != subscription.application_server_key:
            return refuse(403, "k is not the applicationServerKey of the subscription")
        ttl = handler.headers.get("TTL", "")
        if not ttl.isdigit():
            return refuse(400, f"TTL must be a non-negative integer, not {ttl!r}")
        urgency = handler.headers.get("Urgency")
        if urgency is not None and urgency not in URGENCIES:
            return refuse(400, f"bad Urgency {urgency!r}")
        if handler.headers.get("Content-Encoding", "").lower() != "aes128gcm":
            return refuse(400, "Content-Encoding must be aes128gcm")
        if len(body) > MAX_BODY:
            return refuse(413, f"the body is {len(body)} bytes, more than {MAX_BODY}")
        try:
            plaintext = subscription.decrypt(body)
        except Exception as exc:  # noqa: BLE001 - any decryption failure is the sender's fault
            return refuse(400, f"cannot decrypt: {exc!r}", claims=claims, vapid_key=key)
        return Received(
            subscription_id, headers, 201, plaintext=plaintext, claims=claims, vapid_key=key
        )

    def _vapid(self, authorization: str) -> tuple[dict | None, str, str]:
        """(claims, k, problem) of an `Authorization: vapid t=…, k=…` header."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return None, "", "Authorization must use the vapid scheme (RFC 8292)"
        params = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        token, key = params.get("t", ""), params.get("k", "")
        if not token or not key:
            return None, key, "vapid needs t= and k="
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(key)
            )
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                key=public_key,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            return None, key, f"bad VAPID JWT: {exc}"
        if header.get("alg") != "ES256":
            return None, key, "the JWT must be ES256"
        if claims["exp"] > time.time() + MAX_EXP_SECONDS:
            return None, key, "exp is more than 24 hours away"
        return claims, key, ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: PushServiceFake

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up mid-answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        self._respond()

    def do_GET(self) -> None:
        self._respond()

    def _respond(self) -> None:
        self.extra_headers: dict[str, str] = {}
        status, error, headers = self.server.fake._answer(self)
        payload = error.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in {**headers, **self.extra_headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
