"""What every HTTP provider shares: one pooled client per worker process, a
timeout on every call, and one reading of an HTTP answer into an outcome.

2xx is sent; 408, 425, 429 and 5xx are worth retrying (with the answer's
`Retry-After`); a timeout or a connection error too; any other status fails
at once. Providers that know better (an FCM `UNREGISTERED`) decide first and
call `outcome_from_response` for the rest.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx
from django.conf import settings

from delivery.providers.base import FAILED, RETRY, SENT, Message, Outcome

RESPONSE_KEEP_CHARS = 2000
RETRYABLE_STATUSES = frozenset({408, 425, 429})

_clients: dict[tuple, httpx.Client] = {}
_lock = threading.Lock()


def timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.CLARION["PROVIDER_TIMEOUT_SECONDS"])


def shared_client(
    *, http2: bool = False, transport: httpx.HTTPTransport | None = None, name: str = "default"
) -> httpx.Client:
    """This process's client for `name` (kept across batches: keep-alive).

    Keyed by the process id too, so a forked worker child never reuses its
    parent's sockets."""
    key = (os.getpid(), name, http2)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = httpx.Client(
                    http2=http2,
                    timeout=timeout(),
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                    transport=transport,
                    headers={"User-Agent": "Clarion"},
                )
                _clients[key] = client
    return client


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value[:9]), 86400 * 7))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), 86400 * 7))


def outcome_from_response(
    message: Message, response: httpx.Response, duration_ms: int, *, provider_message_id: str = ""
) -> Outcome:
    code = response.status_code
    body = response.text[:RESPONSE_KEEP_CHARS]
    if 200 <= code < 300:
        return Outcome(
            message.delivery_id,
            SENT,
            status_code=code,
            response=body,
            duration_ms=duration_ms,
            provider_message_id=provider_message_id,
        )
    retryable = code >= 500 or code in RETRYABLE_STATUSES
    return Outcome(
        message.delivery_id,
        RETRY if retryable else FAILED,
        reason=f"http_{code}",
        error=f"{code} {response.reason_phrase}".strip(),
        status_code=code,
        response=body,
        duration_ms=duration_ms,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")) if retryable else None,
    )


def outcome_from_exception(message: Message, exc: Exception, duration_ms: int) -> Outcome:
    """A call that got no answer: retry (timeouts, connection errors), or fail
    for what no retry changes (a URL the client cannot use)."""
    if isinstance(exc, httpx.TimeoutException):
        reason = "timeout"
    elif isinstance(exc, httpx.TransportError | OSError):
        reason = "connection_error"
    elif isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol | ValueError):
        return Outcome(
            message.delivery_id,
            FAILED,
            reason="bad_address",
            error=repr(exc)[:500],
            duration_ms=duration_ms,
        )
    else:
        reason = "provider_error"
    return Outcome(
        message.delivery_id, RETRY, reason=reason, error=repr(exc)[:500], duration_ms=duration_ms
    )


def timed(
    message: Message,
    call: Callable[[], httpx.Response],
    read: Callable[[Message, httpx.Response, int], Outcome] | None = None,
) -> Outcome:
    """Make one call and read its answer (by default `outcome_from_response`)."""
    started = time.perf_counter()
    try:
        response = call()
    except Exception as exc:  # noqa: BLE001 - every failure becomes this message's outcome
        return outcome_from_exception(message, exc, _ms(started))
    return (read or outcome_from_response)(message, response, _ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
