"""SMS through Twilio's Messages REST API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).

`twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from=%2B15550001111` (or
`messaging_service_sid=MG…` instead of `from`). The host names the API's
edge (`api.dublin.ie1.twilio.com` works too); `base_url=` replaces the whole
origin to reach a compatible or local server. `concurrency=` is how many
requests of a batch are in flight at once (default 8; 1 sends one by one).

Each message is one form-encoded request through the process's pooled
client, carrying `Idempotency-Key` (and Twilio's `I-Twilio-Idempotency-Token`)
`clarion-delivery-{id}` and a `StatusCallback` that brings the carrier's
verdict back to `/hooks/twilio/status?delivery={id}` (delivery/hooks/twilio_status.py).
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from delivery.providers.base import FAILED, Message, Outcome
from delivery.providers.http import (
    RESPONSE_KEEP_CHARS,
    outcome_from_response,
    shared_client,
    timed,
    timeout,
)
from delivery.providers.registry import ProviderUrl

DEFAULT_HOST = "api.twilio.com"
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 32
STATUS_CALLBACK_PATH = "/hooks/twilio/status"

# Twilio error codes (https://www.twilio.com/docs/api/errors) that say the
# number itself will never take the message: no retry, no failover.
INVALID_NUMBER_CODES = frozenset({21211, 21614})  # not a valid number / not a mobile number
UNSUBSCRIBED_CODE = 21610  # the recipient replied STOP


class TwilioProvider:
    """Sends SMS through one Twilio account (or a server speaking its API)."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str = "",
        messaging_service_sid: str = "",
        base_url: str = f"https://{DEFAULT_HOST}",
        concurrency: int = DEFAULT_CONCURRENCY,
    ):
        if not account_sid or not auth_token:
            raise ImproperlyConfigured("twilio://: the URL needs ACCOUNT_SID:AUTH_TOKEN@…")
        if bool(from_number) == bool(messaging_service_sid):
            raise ImproperlyConfigured(
                "twilio://: give exactly one of ?from=+1… and ?messaging_service_sid=MG…"
            )
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
        self.messages_url = f"{self.base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"

    @classmethod
    def from_url(cls, url: ProviderUrl) -> TwilioProvider:
        raw_concurrency = url.query.get("concurrency", str(DEFAULT_CONCURRENCY))
        try:
            concurrency = int(raw_concurrency)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"twilio://: concurrency must be a number, not {raw_concurrency!r}"
            ) from exc
        return cls(
            account_sid=url.username,
            auth_token=url.password,
            from_number=url.query.get("from", ""),
            messaging_service_sid=url.query.get("messaging_service_sid", ""),
            base_url=url.query.get("base_url") or f"https://{url.host or DEFAULT_HOST}",
            concurrency=concurrency,
        )

    def __repr__(self) -> str:  # never the auth token
        return f"<TwilioProvider {self.account_sid} via {self.base_url}>"

    def send(self, messages: list[Message]) -> list[Outcome]:
        if len(messages) <= 1 or self.concurrency == 1:
            return [self._send_one(message) for message in messages]
        # Each call mostly waits on the network (Twilio answers in ~100-300 ms),
        # so a few threads sharing the pooled, thread-safe client multiply the
        # throughput. A pool per batch: cheap next to the calls, and nothing
        # outlives a forked worker.
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(messages)), thread_name_prefix="twilio"
        ) as pool:
            return list(pool.map(self._send_one, messages))

    def _send_one(self, message: Message) -> Outcome:
        if not message.address:
            return Outcome(
                message.delivery_id,
                FAILED,
                reason="invalid_address",
                error="The recipient has no phone number.",
            )
        client = shared_client(name="twilio")
        form = self._form(message)
        headers = {
            "Idempotency-Key": message.idempotency_key,
            "I-Twilio-Idempotency-Token": message.idempotency_key,
            "Accept": "application/json",
        }
        return timed(
            message,
            lambda: client.post(
                self.messages_url,
                data=form,
                headers=headers,
                auth=(self.account_sid, self.auth_token),
                timeout=timeout(),  # read now: the shared client may predate a settings change
            ),
            _read_response,
        )

    def _form(self, message: Message) -> dict[str, str]:
        form = {"To": message.address, "Body": str((message.content or {}).get("text") or "")}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_number
        form["StatusCallback"] = message.status_callback_url or status_callback_url(
            message.delivery_id
        )
        return form


def status_callback_url(delivery_id: int) -> str:
    """Where Twilio reports this delivery's status (what the hook validates against)."""
    return f"{settings.CLARION['PUBLIC_URL']}{STATUS_CALLBACK_PATH}?delivery={delivery_id}"


def _read_response(message: Message, response: httpx.Response, duration_ms: int) -> Outcome:
    """201 with the message's `sid`; Twilio's error JSON decides between a dead
    number and the general HTTP reading (429/5xx retry, other 4xx fail)."""
    body = _json(response)
    if 200 <= response.status_code < 300:
        sid = body.get("sid")
        return outcome_from_response(
            message,
            response,
            duration_ms,
            provider_message_id=sid if isinstance(sid, str) else "",
        )
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    detail = f"twilio {code}: {body.get('message', '')}".strip()[:500] if code else ""
    if response.status_code == 400 and code in INVALID_NUMBER_CODES | {UNSUBSCRIBED_CODE}:
        return Outcome(
            message.delivery_id,
            FAILED,
            reason="unsubscribed" if code == UNSUBSCRIBED_CODE else "invalid_address",
            error=detail,
            status_code=response.status_code,
            response=response.text[:RESPONSE_KEEP_CHARS],
            duration_ms=duration_ms,
        )
    outcome = outcome_from_response(message, response, duration_ms)
    if detail:
        outcome = dataclasses.replace(outcome, error=f"{outcome.error}; {detail}")
    return outcome


def _json(response: httpx.Response) -> dict:
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):  # not JSON, or hostile nesting
        return {}
    return body if isinstance(body, dict) else {}
