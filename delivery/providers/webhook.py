"""The webhook channel (`webhook://`): a JSON POST to the recipient's
`data.webhook_url` (a chat incoming webhook, a producer's own endpoint),
signed per Standard Webhooks.

    CLARION_PROVIDERS="webhook=webhook://?timeout=5"

The body is the message's rendered `payload`: sent as it is when it is JSON,
else wrapped as `{"payload": "<text>"}`. Every call carries `webhook-id`
(`clarion-delivery-{id}`, the same on every retry, so a receiver can
deduplicate), `webhook-timestamp`, `webhook-signature` (v1, HMAC-SHA256
with the secret of `delivery.providers.signing_secret`) and the
`Idempotency-Key` every Clarion call carries.

Targets are untrusted: every call goes through the SSRF guard
(`ssrf.guarded_client`: public addresses only, checked at connect time),
redirects are not followed (a 3xx fails, reason `redirect`), and at most
RESPONSE_READ_BYTES of an answer are read. A batch is sent concurrently on
a few threads over the process's pooled keep-alive client.

`webhook_call` is also what status webhooks (delivery/services/status_webhooks.py)
send through, so both have one reading of an answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from standardwebhooks import Webhook

from delivery.providers.base import FAILED, Message, Outcome
from delivery.providers.http import outcome_from_exception, outcome_from_response
from delivery.providers.registry import ProviderUrl
from delivery.providers.signing_secret import webhook_signing_secret
from delivery.providers.ssrf import BLOCKED, BlockedAddress, guarded_client, url_problem

# An answer is kept for the attempt log only: a target that answers a
# gigabyte costs us this much.
RESPONSE_READ_BYTES = 64 * 1024
SEND_THREADS = 8
_BODY_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def signature_headers(
    secret: str, webhook_id: str, body: str, *, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers of one call."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
    }


def json_body(payload: object) -> str:
    """The request body: a JSON text payload as it is, anything else as JSON."""
    if isinstance(payload, str):
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            return orjson.dumps({"payload": payload}).decode()
        return payload
    return orjson.dumps(payload, default=str).decode()


def webhook_call(
    client: httpx.Client,
    message: Message,
    *,
    body: str,
    webhook_id: str,
    secret: str,
    timeout: float,
    extra_headers: Mapping[str, str] | None = None,
) -> Outcome:
    """POST a signed JSON body to `message.address`; the outcome, never an exception."""
    started = time.perf_counter()
    problem = url_problem(message.address)
    if problem:
        return Outcome(message.delivery_id, FAILED, reason=problem[0], error=problem[1])
    headers = {
        "Content-Type": "application/json",
        # Identity only: the answer is read raw and bounded, never inflated.
        "Accept-Encoding": "identity",
        **signature_headers(secret, webhook_id, body),
        **(extra_headers or {}),
    }
    try:
        response = _post_bounded(client, message.address, body.encode(), headers, timeout)
    except BlockedAddress as exc:
        return Outcome(
            message.delivery_id,
            FAILED,
            reason=BLOCKED,
            error=str(exc)[:500],
            duration_ms=_ms(started),
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes this message's outcome
        return outcome_from_exception(message, exc, _ms(started))
    if 300 <= response.status_code < 400:
        return Outcome(
            message.delivery_id,
            FAILED,
            reason="redirect",
            error=f"{response.status_code} to {response.headers.get('Location', '')[:200]!r}:"
            " redirects are not followed",
            status_code=response.status_code,
            duration_ms=_ms(started),
        )
    return outcome_from_response(message, response, _ms(started))


def _post_bounded(
    client: httpx.Client, url: str, content: bytes, headers: dict, timeout: float
) -> httpx.Response:
    """The answer, its body cut at RESPONSE_READ_BYTES (the rest is not read:
    such a connection is closed instead of kept)."""
    with client.stream("POST", url, content=content, headers=headers, timeout=timeout) as response:
        kept = bytearray()
        for chunk in response.iter_raw():
            kept += chunk
            if len(kept) >= RESPONSE_READ_BYTES:
                break
    # The body is kept raw: the headers that would make httpx decode it again go.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in _BODY_FRAMING
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(kept[:RESPONSE_READ_BYTES]),
        request=response.request,
    )


class WebhookProvider:
    """Sends the webhook channel; one instance per worker process."""

    # Each recipient's URL is its own destination: one that fails says
    # nothing of the others, so no shared circuit breaker; a breaker per
    # destination host instead (delivery/services/breaker.py).
    uses_breaker = False

    @staticmethod
    def destination_of(message: Message) -> str:
        """The receiver a message goes to: host and port of its URL (empty when unparsable)."""
        try:
            parts = urlsplit(message.address)
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:  # e.g. a port out of range
            return ""
        if not host:
            return ""
        return f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"

    def __init__(self, *, timeout: float | None = None, client: httpx.Client | None = None):
        self._timeout = timeout
        self._client = client  # tests: a guarded client with their own resolver

    @classmethod
    def from_url(cls, url: ProviderUrl) -> WebhookProvider:
        webhook_signing_secret()  # a malformed secret stops the worker at start, not each send
        raw = url.query.get("timeout")
        if raw is None:
            return cls()
        try:
            timeout = float(raw)
        except ValueError:
            timeout = 0.0
        if not 0 < timeout <= 300:
            raise ImproperlyConfigured(
                f"CLARION_PROVIDERS: webhook:// timeout must be seconds in (0, 300], not {raw!r}"
            )
        return cls(timeout=timeout)

    def send(self, messages: list[Message]) -> list[Outcome]:
        if len(messages) <= 1:
            return [self._send_one(m) for m in messages]
        with ThreadPoolExecutor(max_workers=min(SEND_THREADS, len(messages))) as pool:
            return list(pool.map(self._send_one, messages))

    def _send_one(self, message: Message) -> Outcome:
        content = message.content or {}
        try:
            body = json_body(content.get("payload", content))
            body.encode()
        except (orjson.JSONEncodeError, UnicodeEncodeError) as exc:  # e.g. a lone surrogate
            return Outcome(message.delivery_id, FAILED, reason="bad_payload", error=str(exc)[:500])
        return webhook_call(
            self._client or guarded_client(),
            message,
            body=body,
            webhook_id=message.idempotency_key,
            secret=webhook_signing_secret(),
            timeout=self._timeout or settings.CLARION["PROVIDER_TIMEOUT_SECONDS"],
            extra_headers={"Idempotency-Key": message.idempotency_key},
        )


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
