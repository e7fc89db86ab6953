"""Web push to browsers (RFC 8030), encrypted (RFC 8291) and VAPID-signed (RFC 8292).

    CLARION_PROVIDERS="web_push=webpush://?vapid_subject=mailto:ops@example.com"
    CLARION_VAPID_PRIVATE_KEY=…  CLARION_VAPID_PUBLIC_KEY=…  (create_vapid_keys prints both)

Query: `vapid_subject` (required: a `mailto:` or `https:` contact the push
services may use), `ttl` (seconds a push service keeps an undelivered
message, default a day), `urgency` (RFC 8030 §5.3: very-low, low, normal,
high; default normal), `concurrency` (requests in flight, default 8).
There is no `base_url`: each subscription names its own push service.

A message's targets are the recipient's subscriptions as JSON
(`{"endpoint", "keys": {"p256dh", "auth"}}`, web_push_targets). Each is one
POST of the JSON `{"title", "body", "url", "delivery_id"}`, encrypted with
pywebpush (`aes128gcm`, one record of at most 4096 bytes: a longer body is
cut), carrying `TTL`, `Urgency`, `Content-Encoding` and `Authorization:
vapid t=<ES256 JWT>, k=<public key>` (aud = the endpoint's origin; one JWT
per origin, valid 12 hours and renewed an hour before it ends).

201/202: sent (the `Location` is the message id); 404/410: the subscription
is gone (`invalid_targets`, pruned); 429/5xx: retry (Retry-After); other
4xx: failed. One outcome per message (fcm.outcome_from_tokens): sent if any
subscription took it, else retried if any may yet, else failed
(`invalid_token` when every subscription is gone).

Endpoints are untrusted URLs: https only (http while WEBHOOK_ALLOW_PRIVATE
is on), sent through the SSRF guard (ssrf.guarded_client), redirects not
followed, at most RESPONSE_READ_BYTES of an answer read.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from py_vapid import Vapid
from py_vapid.jwt import sign as jwt_sign
from pywebpush import WebPusher

from delivery.providers.base import FAILED, Message, Outcome
from delivery.providers.fcm import (
    INVALID_TOKEN,
    TokenPool,
    concurrency_from,
    outcome_from_tokens,
)
from delivery.providers.http import (
    RESPONSE_KEEP_CHARS,
    outcome_from_exception,
    outcome_from_response,
    timeout,
)
from delivery.providers.registry import ProviderUrl
from delivery.providers.ssrf import BLOCKED, BlockedAddress, guarded_client, url_problem

DEFAULT_TTL = 24 * 3600
MAX_TTL = 28 * 24 * 3600  # what push services keep at most (FCM: 4 weeks)
URGENCIES = ("very-low", "low", "normal", "high")
# The VAPID JWT: valid 12 h (RFC 8292 allows at most 24 h), renewed when
# less than an hour is left, so one signature serves a push service for hours.
JWT_LIFETIME = 12 * 3600
JWT_RENEW_BEFORE = 3600
JWT_CACHE_MAX = 1024
# One aes128gcm record: 4096 bytes of body less the header (16 salt + 4 rs +
# 1 + 65 key id), the padding delimiter and the 16-byte tag (RFC 8291 §4).
MAX_PLAINTEXT = 4096 - 86 - 1 - 16
URL_KEEP_BYTES = 1024
RESPONSE_READ_BYTES = 16 * 1024
_BODY_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding"})


# --- VAPID keys ------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    text = text.strip().rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def vapid_keys_generate() -> tuple[str, str]:
    """A new VAPID key pair: (private, public). The private key is the raw
    32-byte scalar and the public key the 65-byte uncompressed point, both
    base64url: the forms browsers (`applicationServerKey`) and the common web
    push libraries take."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big")), public_key_of(key)


def public_key_of(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


def vapid_private_key_load(text: str) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key from the setting: raw base64url (create_vapid_keys),
    base64url DER, or PEM (what `vapid --gen` writes)."""
    text = (text or "").strip()
    if not text:
        raise ImproperlyConfigured(
            "web push: CLARION_VAPID_PRIVATE_KEY is empty; `python manage.py create_vapid_keys`"
            " prints a key pair."
        )
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Vapid.from_string(text).private_key
    except Exception as exc:  # noqa: BLE001 - whatever the parsers raise, it is not a key
        raise ImproperlyConfigured(
            "web push: CLARION_VAPID_PRIVATE_KEY is not a P-256 private key"
            " (base64url, as create_vapid_keys prints it)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ImproperlyConfigured("web push: the VAPID key must be a P-256 (prime256v1) key")
    return key


# --- the provider ----------------------------------------------------------------


@dataclass(frozen=True)
class _Subscription:
    endpoint: str
    p256dh: str
    auth: str

    @property
    def audience(self) -> str:
        """The push resource's origin, the JWT's `aud` (RFC 8292 §2)."""
        parts = urlsplit(self.endpoint)
        default = {"https": 443, "http": 80}.get(parts.scheme)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port and parts.port != default else ""
        return f"{parts.scheme}://{host}{port}"


class WebPushProvider:
    """Sends the web_push channel; one instance per worker process."""

    # Each subscription names its own push service: no shared breaker.
    uses_breaker = False

    def __init__(
        self,
        *,
        private_key: str,
        public_key: str = "",
        subject: str,
        ttl: int = DEFAULT_TTL,
        urgency: str = "normal",
        concurrency: int = 8,
        client: httpx.Client | None = None,
    ):
        if not subject.startswith(("mailto:", "https://")) or len(subject) < 10:
            raise ImproperlyConfigured(
                "webpush://?vapid_subject= must be a contact: mailto:ops@example.com or an"
                f" https:// URL, not {subject!r}"
            )
        if not 0 <= ttl <= MAX_TTL:
            raise ImproperlyConfigured(f"webpush://?ttl= must be 0 to {MAX_TTL} seconds")
        if urgency not in URGENCIES:
            raise ImproperlyConfigured(f"webpush://?urgency= must be one of {', '.join(URGENCIES)}")
        self._key = vapid_private_key_load(private_key)
        self.public_key = public_key_of(self._key)
        if public_key and _normalized(public_key) != self.public_key:
            raise ImproperlyConfigured(
                "web push: CLARION_VAPID_PUBLIC_KEY is not the public half of"
                " CLARION_VAPID_PRIVATE_KEY (browsers would subscribe with the wrong key)"
            )
        self.subject = subject
        self.ttl = ttl
        self.urgency = urgency
        self._client = client  # tests: a client of their own
        self._pool = TokenPool(concurrency)
        self._jwts: dict[str, tuple[str, float]] = {}  # audience -> (header, expires at)
        self._jwt_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: ProviderUrl) -> WebPushProvider:
        cfg = settings.CLARION
        raw_ttl = url.query.get("ttl") or str(DEFAULT_TTL)
        if not raw_ttl.isdigit():
            raise ImproperlyConfigured(f"webpush://?ttl= must be seconds, not {raw_ttl!r}")
        return cls(
            private_key=cfg.get("VAPID_PRIVATE_KEY") or "",
            public_key=cfg.get("VAPID_PUBLIC_KEY") or "",
            subject=url.query.get("vapid_subject", ""),
            ttl=int(raw_ttl),
            urgency=url.query.get("urgency") or "normal",
            concurrency=concurrency_from(url),
        )

    def __repr__(self) -> str:  # never the private key
        return f"<WebPushProvider {self.subject} key {self.public_key[:12]}…>"

    def send(self, messages: list[Message]) -> list[Outcome]:
        payloads = {m.delivery_id: push_payload(m) for m in messages}
        jobs = [(message, target) for message in messages for target in message.targets]
        results = self._pool.map(
            lambda job: self._send_one(job[0], job[1], payloads[job[0].delivery_id]), jobs
        )
        by_message: dict[int, list[tuple[str, Outcome]]] = {m.delivery_id: [] for m in messages}
        for (message, _), result in zip(jobs, results, strict=True):
            by_message[message.delivery_id].append(result)
        return [outcome_from_tokens(m, by_message[m.delivery_id]) for m in messages]

    # --- one subscription ---------------------------------------------------------

    def _send_one(self, message: Message, target: str, payload: bytes) -> tuple[str, Outcome]:
        """(the endpoint, this subscription's outcome)."""
        started = time.perf_counter()
        subscription = _parse_target(target)
        if subscription is None:
            return "", Outcome(
                message.delivery_id,
                FAILED,
                reason="bad_subscription",
                error="The stored subscription is not {endpoint, keys: {p256dh, auth}} JSON.",
            )
        endpoint = subscription.endpoint
        problem = _endpoint_problem(endpoint)
        if problem:
            # Failed, not pruned: the rule (or its development switch) may change.
            return endpoint, Outcome(
                message.delivery_id, FAILED, reason=problem[0], error=problem[1]
            )
        try:
            body = WebPusher(
                {
                    "endpoint": endpoint,
                    "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
                }
            ).encode(payload, content_encoding="aes128gcm")["body"]
        except Exception as exc:  # noqa: BLE001 - keys the API would have refused
            return endpoint, Outcome(
                message.delivery_id,
                FAILED,
                reason="bad_subscription",
                error=f"cannot encrypt to this subscription: {exc!r}"[:500],
            )
        authorization = self._authorization(subscription.audience)
        headers = {
            "TTL": str(self.ttl),
            "Urgency": self.urgency,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": authorization,
            "Idempotency-Key": message.idempotency_key,
            "Accept-Encoding": "identity",
        }
        try:
            response = self._post(endpoint, body, headers)
        except BlockedAddress as exc:
            return endpoint, Outcome(
                message.delivery_id,
                FAILED,
                reason=BLOCKED,
                error=str(exc)[:500],
                duration_ms=_ms(started),
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes this message's outcome
            return endpoint, outcome_from_exception(message, exc, _ms(started))
        return endpoint, _read(message, response, _ms(started))

    def _post(self, endpoint: str, body: bytes, headers: dict) -> httpx.Response:
        """The answer, its body cut at RESPONSE_READ_BYTES (the endpoint is untrusted)."""
        client = self._client or guarded_client()
        with client.stream(
            "POST", endpoint, content=body, headers=headers, timeout=timeout()
        ) as response:
            kept = bytearray()
            for chunk in response.iter_raw():
                kept += chunk
                if len(kept) >= RESPONSE_READ_BYTES:
                    break
        return httpx.Response(
            response.status_code,
            headers=[
                (name, value)
                for name, value in response.headers.multi_items()
                if name.lower() not in _BODY_FRAMING
            ],
            content=bytes(kept[:RESPONSE_READ_BYTES]),
            request=response.request,
        )

    def _authorization(self, audience: str) -> str:
        """`vapid t=<JWT>, k=<public key>` for this push service (RFC 8292 §3)."""
        now = time.time()
        cached = self._jwts.get(audience)
        if cached and cached[1] - now > JWT_RENEW_BEFORE:
            return cached[0]
        # Signed under the lock, looked up again first: the threads of one
        # batch share one JWT per push service instead of each making its own.
        with self._jwt_lock:
            cached = self._jwts.get(audience)
            if cached and cached[1] - now > JWT_RENEW_BEFORE:
                return cached[0]
            expires = int(now) + JWT_LIFETIME
            token = jwt_sign({"aud": audience, "exp": expires, "sub": self.subject}, self._key)
            header = f"vapid t={token}, k={self.public_key}"
            if len(self._jwts) >= JWT_CACHE_MAX:
                self._jwts.clear()
            self._jwts[audience] = (header, expires)
        return header


def push_payload(message: Message) -> bytes:
    """What the service worker receives: `{"title", "body", "url", "delivery_id"}`
    as UTF-8 JSON, cut to fit one record: a url longer than URL_KEEP_BYTES is
    dropped (half a link is no link), then the body and then the title are
    cut, ending in an ellipsis."""
    content = message.content or {}
    doc = {
        "title": str(content.get("title") or ""),
        "body": str(content.get("body") or ""),
        "url": str(content.get("url") or ""),
        "delivery_id": message.delivery_id,
    }
    raw = _json(doc)
    if len(raw) <= MAX_PLAINTEXT:
        return raw
    if _json_len(doc["url"]) > URL_KEEP_BYTES:
        doc["url"] = ""
    for name in ("body", "title"):
        raw = _json(doc)
        if len(raw) <= MAX_PLAINTEXT:
            return raw
        doc[name] = _cut(doc[name], MAX_PLAINTEXT - (len(raw) - _json_len(doc[name])))
    return _json(doc)


def _json(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _json_len(text: str) -> int:
    """The bytes `text` takes inside a JSON string (escapes included)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _cut(text: str, room: int) -> str:
    """The longest prefix of `text` taking at most `room` JSON bytes with "…" added."""
    room -= len("…".encode())
    if room <= 0:
        return ""
    taken = 0
    for index, char in enumerate(text):
        taken += _json_len(char)
        if taken > room:
            return text[:index].rstrip() + "…"
    return text


def _read(message: Message, response: httpx.Response, duration_ms: int) -> Outcome:
    code = response.status_code
    if code in (404, 410):
        return Outcome(
            message.delivery_id,
            FAILED,
            reason=INVALID_TOKEN,
            error=f"{code} {response.reason_phrase}: the subscription is gone".strip(),
            status_code=code,
            response=response.text[:RESPONSE_KEEP_CHARS],
            duration_ms=duration_ms,
        )
    if 300 <= code < 400:
        return Outcome(
            message.delivery_id,
            FAILED,
            reason="redirect",
            error=f"{code}: redirects are not followed",
            status_code=code,
            duration_ms=duration_ms,
        )
    return outcome_from_response(
        message,
        response,
        duration_ms,
        provider_message_id=response.headers.get("Location", "")[:255] if code < 300 else "",
    )


def _parse_target(target: str) -> _Subscription | None:
    try:
        doc = json.loads(target)
        keys = doc["keys"]
        subscription = _Subscription(str(doc["endpoint"]), str(keys["p256dh"]), str(keys["auth"]))
    except (ValueError, TypeError, KeyError):
        return None
    return subscription if subscription.endpoint else None


def _endpoint_problem(endpoint: str) -> tuple[str, str] | None:
    """(reason, message) when the endpoint may not be called at all."""
    problem = url_problem(endpoint)
    if problem:
        return problem
    if urlsplit(endpoint).scheme != "https" and not settings.CLARION["WEBHOOK_ALLOW_PRIVATE"]:
        return BLOCKED, "Push endpoints must be https URLs."
    return None


def _normalized(public_key: str) -> str:
    try:
        return b64url(b64url_decode(public_key))
    except (ValueError, binascii.Error):
        return public_key


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
