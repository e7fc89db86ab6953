"""Apple Push Notification service, the HTTP/2 provider API with token auth.

`apns://TEAM_ID:KEY_ID@api.push.apple.com?key=/secrets/AuthKey.p8&topic=com.example.app`
`[&sandbox=1][&base_url=…][&concurrency=100]`. APNs speaks only HTTP/2: one
HTTP/2-only client per process (ALPN `h2` over TLS; prior knowledge on a
cleartext `base_url`), a batch's notifications multiplexed as concurrent
streams over one long-lived connection, as Apple asks.

The client is an `httpx.AsyncClient` on an event loop thread of the process:
httpcore's sync HTTP/2 connection encodes headers without a lock, so threads
sharing one connection corrupt its HPACK state; one loop has no such race.

The provider token is an ES256 JWT (`kid` = key id, `iss` = team id, `iat`),
reused for 50 minutes: Apple refuses tokens older than an hour and answers
`TooManyProviderTokenUpdates` to a client that mints them too often.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from delivery.providers.base import RETRY, Message, Outcome
from delivery.providers.fcm import (
    batch_outcome,
    concurrency_from,
    invalid_token_outcome,
    outcome_from_tokens,
)
from delivery.providers.http import outcome_from_exception, outcome_from_response, timeout
from delivery.providers.registry import ProviderUrl

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
PROVIDER_TOKEN_MAX_AGE_SECONDS = 50 * 60
EXPIRED_PROVIDER_TOKEN = "expired_provider_token"
# Streams in flight at once; APNs allows up to 1000 per connection.
DEFAULT_STREAMS = 100
MAX_STREAMS = 1000
# The apns-id of a delivery's notification to one device: the same on every
# resend, so Apple's records and the app can tell it is one notification.
APNS_ID_NAMESPACE = uuid.UUID("6f1c7f0e-3b7a-5d38-9a59-0d1c1a7e9b42")

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running on a daemon thread, one per process (a forked
    worker child starts its own: the parent's thread does not exist in it)."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._get())
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def _get(self) -> asyncio.AbstractEventLoop:
        pid = os.getpid()
        if self._pid != pid or self._loop is None:
            with self._lock:
                if self._pid != pid or self._loop is None:
                    loop = asyncio.new_event_loop()
                    threading.Thread(target=loop.run_forever, name=self.name, daemon=True).start()
                    self._loop, self._pid = loop, pid
        return self._loop


class ApnsProvider:
    platform = "apns"

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        signing_key: EllipticCurvePrivateKey,
        topic: str,
        base_url: str,
        concurrency: int = DEFAULT_STREAMS,
    ):
        self.team_id = team_id
        self.key_id = key_id
        self.topic = topic
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self._signing_key = signing_key
        self._jwt_lock = threading.Lock()
        self._jwt: tuple[str, float] = ("", 0.0)  # (token, monotonic time minted)

    @classmethod
    def from_url(cls, url: ProviderUrl) -> ApnsProvider:
        if not url.username or not url.password:
            raise ImproperlyConfigured(
                "apns://TEAM_ID:KEY_ID@host: the team id and key id are needed"
            )
        topic = url.query.get("topic", "")
        if not topic:
            raise ImproperlyConfigured("apns://…: ?topic= (the app's bundle id) is needed")
        host = url.host or PRODUCTION_HOST
        if url.flag("sandbox") and host == PRODUCTION_HOST:
            host = SANDBOX_HOST
        base_url = url.query.get("base_url") or (
            f"https://{host}" + (f":{url.port}" if url.port else "")
        )
        return cls(
            team_id=url.username,
            key_id=url.password,
            signing_key=_load_key(url.query.get("key", "")),
            topic=topic,
            base_url=base_url,
            concurrency=concurrency_from(url, default=DEFAULT_STREAMS, maximum=MAX_STREAMS),
        )

    def send(self, messages: list[Message]) -> list[Outcome]:
        jobs = [(message, token) for message in messages for token in message.targets]
        # Each call is bounded by the client's timeouts; this bounds the batch
        # (a token may take a refused-JWT retry and a dropped-connection retry).
        rounds = math.ceil(len(jobs) / self.concurrency) + 1
        limit = 4 * rounds * settings.CLARION["PROVIDER_TIMEOUT_SECONDS"]
        try:
            results = _loop.run(self._send_all(jobs), timeout=limit)
        except FutureTimeout:
            return [batch_outcome(m, RETRY, "timeout", f"batch over {limit:g} s") for m in messages]
        by_message: dict[int, list[tuple[str, Outcome]]] = {m.delivery_id: [] for m in messages}
        for (message, token), outcome in zip(jobs, results, strict=True):
            by_message[message.delivery_id].append((token, outcome))
        return [outcome_from_tokens(m, by_message[m.delivery_id]) for m in messages]

    async def _send_all(self, jobs: list[tuple[Message, str]]) -> list[Outcome]:
        client = _client()
        provider_token = self._provider_token()
        streams = asyncio.Semaphore(self.concurrency)

        async def one(message: Message, token: str) -> Outcome:
            async with streams:
                return await self._send_one(client, message, token, provider_token)

        return list(await asyncio.gather(*(one(message, token) for message, token in jobs)))

    # --- one device ---------------------------------------------------------------

    async def _send_one(
        self, client: httpx.AsyncClient, message: Message, token: str, provider_token: str
    ) -> Outcome:
        outcome = await self._timed(client, message, token, provider_token)
        if outcome.reason != EXPIRED_PROVIDER_TOKEN:
            return outcome
        fresh = self._provider_token(refused=provider_token)
        return await self._timed(client, message, token, fresh)

    async def _timed(
        self, client: httpx.AsyncClient, message: Message, token: str, provider_token: str
    ) -> Outcome:
        started = time.perf_counter()
        try:
            response = await self._post(client, message, token, provider_token)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this token's outcome
            return outcome_from_exception(message, exc, _ms(started))
        return _read(message, response, _ms(started))

    async def _post(
        self, client: httpx.AsyncClient, message: Message, token: str, provider_token: str
    ) -> httpx.Response:
        url = f"{self.base_url}/3/device/{quote(token, safe='')}"
        body = self._payload(message)
        headers = {
            "authorization": f"bearer {provider_token}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-id": apns_id(message, token),
            "idempotency-key": message.idempotency_key,
        }
        try:
            return await client.post(url, json=body, headers=headers)
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
            # The kept connection was closed (APNs' GOAWAY, a NAT or balancer
            # dropping it) while it sat in the pool: an HTTP/2 pool only finds
            # out on use. Once more, on a new connection, rather than retry the
            # whole delivery later (which would resend to every device too).
            return await client.post(url, json=body, headers=headers)

    @staticmethod
    def _payload(message: Message) -> dict:
        content = message.content or {}
        alert = {name: str(content[name]) for name in ("title", "body") if content.get(name)}
        # Keys beside `aps` reach the app as the notification's userInfo.
        return {"aps": {"alert": alert}, "delivery_id": str(message.delivery_id)}

    # --- the provider token -----------------------------------------------------

    def _provider_token(self, *, refused: str | None = None) -> str:
        """The kept JWT, or a new one when it is 50 minutes old or APNs just
        called it expired (`refused`); the streams meeting that 403 share one."""
        token, minted = self._jwt
        if (
            token
            and token != refused
            and time.monotonic() - minted < PROVIDER_TOKEN_MAX_AGE_SECONDS
        ):
            return token
        with self._jwt_lock:
            token, minted = self._jwt
            fresh = time.monotonic() - minted < PROVIDER_TOKEN_MAX_AGE_SECONDS
            if token and token != refused and fresh:
                return token
            token = jwt.encode(
                {"iss": self.team_id, "iat": int(time.time())},
                self._signing_key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._jwt = (token, time.monotonic())
            return token


_loop = LoopThread("apns")
_clients: dict[int, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    """This process's HTTP/2-only client, for every APNs provider of it. Made
    and used on the loop thread only, so it needs no lock."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        client = _clients[pid] = httpx.AsyncClient(
            http1=False,
            http2=True,
            timeout=timeout(),
            follow_redirects=False,
            headers={"User-Agent": "Clarion"},
            # Apple asks for long-lived connections (rapid reconnects look like
            # a denial-of-service attack): keep an idle one ten minutes.
            limits=httpx.Limits(
                max_connections=4, max_keepalive_connections=4, keepalive_expiry=600
            ),
        )
    return client


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def apns_id(message: Message, token: str) -> str:
    return str(uuid.uuid5(APNS_ID_NAMESPACE, f"{message.idempotency_key}:{token}")).upper()


def _read(message: Message, response: httpx.Response, duration_ms: int) -> Outcome:
    code = response.status_code
    if code == 200:
        return outcome_from_response(
            message, response, duration_ms, provider_message_id=response.headers.get("apns-id", "")
        )
    reason = _reason(response)
    # 410: the token is no longer active for the topic (the app was removed).
    if code == 410 or (code == 400 and reason == "BadDeviceToken"):
        return invalid_token_outcome(message, response, duration_ms, reason or "Unregistered")
    outcome = outcome_from_response(message, response, duration_ms)
    if code == 403 and reason == "ExpiredProviderToken":
        outcome = replace(outcome, reason=EXPIRED_PROVIDER_TOKEN)
    return replace(outcome, error=f"{outcome.error} {reason}") if reason else outcome


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("reason") or "") if isinstance(body, dict) else ""


def _load_key(path: str) -> EllipticCurvePrivateKey:
    if not path:
        raise ImproperlyConfigured("apns://…: ?key=/path/to/AuthKey_KEYID.p8 is needed")
    try:
        key = load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"apns://…: cannot read the signing key {path!r}: {exc}"
        ) from exc
    if not isinstance(key, EllipticCurvePrivateKey):
        raise ImproperlyConfigured(f"apns://…: {path!r} is not an EC (ES256) key")
    return key
