"""Per-API-key rate limits: a token bucket in Redis, shared by every process.

The bucket of a key is a Redis hash `clarion:ratelimit:<api key id>` holding
its tokens and the time they were counted. One Lua script refills it from
Redis's own clock (`TIME`, so web servers with skewed clocks agree), takes the
request's cost and returns how long to wait if it cannot; being one script, it
is atomic however many processes ask at once. A bucket expires when it would
be full again, so idle keys leave nothing in Redis.

Cost: one token per event, so a batch of 100 events costs what 100 single
requests cost and splitting or joining batches gains nothing. A batch larger
than the bucket is still possible: it needs a full bucket and leaves it in
debt (negative), which the refill pays back before the next request passes.
Other producer requests cost one token.

If Redis cannot be reached the limiter fails open: the request is accepted,
the failure logged and counted (`clarion_rate_limiter_errors_total`), and
Redis is not asked again for BACKOFF_SECONDS, so an outage costs no request
more than one short timeout.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time

import redis
import redis.asyncio as aioredis
from django.conf import settings
from prometheus_client import Counter

from notifications.errors import RateLimited
from notifications.rates import Rate

log = logging.getLogger(__name__)

KEY_PREFIX = "clarion:ratelimit:"
TIMEOUT_SECONDS = 0.5
BACKOFF_SECONDS = 1.0

RATE_LIMITED = Counter("clarion_rate_limited", "Requests refused with 429 by an API key's rate limit", ["key"])
LIMITER_ERRORS = Counter(
    "clarion_rate_limiter_errors", "Requests let through unchecked because Redis could not be asked (fail open)"
)

# KEYS: one bucket per request (a key may repeat: its requests are taken in order).
# ARGV: per request, capacity, period in microseconds, cost.
# Returns per request the microseconds to wait, 0 when it was let through.
_TAKE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_text = clock[1] .. string.format('%06d', tonumber(clock[2]))  -- exact, unlike tostring
local now = tonumber(now_text)
local waits = {}
for i, key in ipairs(KEYS) do
    local capacity = tonumber(ARGV[3 * i - 2])
    local period = tonumber(ARGV[3 * i - 1])
    local cost = tonumber(ARGV[3 * i])
    local state = redis.call('HMGET', key, 'tokens', 'at')
    local tokens = capacity
    if state[1] then
        local elapsed = math.max(0, now - tonumber(state[2]))  -- a clock stepping back refills nothing
        tokens = math.min(capacity, tonumber(state[1]) + elapsed * capacity / period)
    end
    local need = math.min(cost, capacity)   -- a batch over the capacity needs a full bucket
    if tokens >= need then
        tokens = tokens - cost
        redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', now_text)
        local refill_ms = math.ceil((capacity - tokens) * period / capacity / 1000)
        redis.call('PEXPIRE', key, math.max(refill_ms, 1))
        waits[i] = 0
    else
        waits[i] = math.ceil((need - tokens) * period / capacity)
    end
end
return waits
"""


def bucket_key(api_key_id: int) -> str:
    return f"{KEY_PREFIX}{api_key_id}"


def _script_args(entries: list[tuple[int, Rate, int]]) -> tuple[list[str], list[int]]:
    keys, args = [], []
    for api_key_id, rate, cost in entries:
        keys.append(bucket_key(api_key_id))
        args.extend((rate.tokens, rate.period_seconds * 1_000_000, max(cost, 1)))
    return keys, args


def retry_after_seconds(wait_microseconds: int) -> int:
    """Retry-After is whole seconds, at least 1 (0 would invite an immediate retry)."""
    return max(1, math.ceil(wait_microseconds / 1_000_000))


def refuse(*, key_name: str, wait_microseconds: int) -> RateLimited:
    RATE_LIMITED.labels(key_name).inc()
    return RateLimited(retry_after=retry_after_seconds(wait_microseconds))


class _Backoff:
    """After a Redis failure, do not ask again for BACKOFF_SECONDS (fail open meanwhile)."""

    def __init__(self) -> None:
        self.until = 0.0

    def open(self) -> bool:
        return time.monotonic() < self.until

    def failed(self, error: Exception, requests: int) -> None:
        self.until = time.monotonic() + BACKOFF_SECONDS
        LIMITER_ERRORS.inc(requests)
        log.warning("rate limiter cannot reach Redis, letting requests through: %r", error)


# --- Sync: the DRF views (threads) -------------------------------------------
_sync_client: redis.Redis | None = None
_sync_script = None
_sync_backoff = _Backoff()


def _client() -> redis.Redis:
    global _sync_client, _sync_script
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        _sync_script = _sync_client.register_script(_TAKE)  # EVALSHA; loaded again on NOSCRIPT
    return _sync_client


def rate_limit_take(*, api_key_id: int, key_name: str, rate: Rate, cost: int = 1) -> None:
    """Take `cost` tokens from the key's bucket; raises RateLimited when it cannot."""
    if _sync_backoff.open():
        LIMITER_ERRORS.inc()
        return
    client = _client()
    keys, args = _script_args([(api_key_id, rate, cost)])
    try:
        (wait,) = _sync_script(keys=keys, args=args, client=client)
    except (redis.RedisError, OSError) as error:
        _sync_backoff.failed(error, 1)
        return
    if wait:
        raise refuse(key_name=key_name, wait_microseconds=wait)


def rate_limit_clients_reset() -> None:
    """Forget the Redis clients (tests pointing REDIS_URL elsewhere)."""
    global _sync_client, _sync_script
    _sync_client = _sync_script = None
    _sync_backoff.until = 0.0


# --- Async: the event-loop intake --------------------------------------------
class AsyncRateLimiter:
    """Takes tokens for requests on one event loop, one Redis call at a time.

    Requests that arrive while a call is in flight wait and go together in the
    next one (one script run for all of them), so under load the limiter costs
    a round trip per group, not per request, and never blocks the loop.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[int, Rate, int, asyncio.Future]] = []
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None
        self._script = None
        self._backoff = _Backoff()

    async def take(self, *, api_key_id: int, key_name: str, rate: Rate, cost: int = 1) -> None:
        """Take `cost` tokens from the key's bucket; raises RateLimited when it cannot."""
        if self._backoff.open():
            LIMITER_ERRORS.inc()
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((api_key_id, rate, cost, future))
        if not self._busy:
            self._busy = True
            loop.create_task(self._drain(loop))
        wait = await future
        if wait:
            raise refuse(key_name=key_name, wait_microseconds=wait)

    def _script_for(self, loop: asyncio.AbstractEventLoop):
        if self._loop is not loop:  # asyncio connections cannot cross event loops
            self._loop = loop
            self._client = aioredis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
            )
            self._script = self._client.register_script(_TAKE)
        return self._script

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                keys, args = _script_args([(key_id, rate, cost) for key_id, rate, cost, _ in group])
                try:
                    waits = await self._script_for(loop)(keys=keys, args=args, client=self._client)
                except (redis.RedisError, OSError) as error:
                    self._backoff.failed(error, len(group))
                    waits = [0] * len(group)
                except Exception as error:  # noqa: BLE001 - every waiter must get an answer
                    for *_, future in group:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (*_, future), wait in zip(group, waits):
                    if not future.done():
                        future.set_result(wait)
        finally:
            self._busy = False
