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

The event-loop intake leases: with a request's tokens it takes up to 1% of the
bucket (LEASE_DIVISOR) for its process, spends them on the next requests
without asking Redis, and gives back what is left after LEASE_SECONDS with its
next request. Asking Redis for every request cost the intake 7-12% of its
events/s here (python -m bench ingest_ratelimit), though the limiter's own
code took a fraction of that: waiting for the answer, even overlapped with
reading the body, shrank commit groups and added loop turns. A lease costs one
round trip per 1% of the bucket or per second. Buckets under 100 tokens are
never leased, so they are exact; a larger one may pass up to 1% more per web
process in a burst. A key refused for `Retry-After` is refused locally until
then, so a producer hammering a spent key costs no Redis call.

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

from common.errors import RateLimited
from notifications.rates import Rate

log = logging.getLogger(__name__)

KEY_PREFIX = "clarion:ratelimit:"
TIMEOUT_SECONDS = 0.5
BACKOFF_SECONDS = 1.0
LEASE_DIVISOR = 100
LEASE_SECONDS = 1.0

RATE_LIMITED = Counter(
    "clarion_rate_limited", "Requests refused with 429 by an API key's rate limit", ["key"]
)
LIMITER_ERRORS = Counter(
    "clarion_rate_limiter_errors",
    "Requests let through unchecked because Redis could not be asked (fail open)",
)

# KEYS: one bucket per request (a key may repeat: its requests are taken in order).
# ARGV: per request, capacity, period in microseconds, cost, tokens to lease
# besides, tokens given back (first).
# Returns per request {microseconds to wait (0: taken), tokens leased}.
_TAKE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_text = clock[1] .. string.format('%06d', tonumber(clock[2]))  -- exact, unlike tostring
local now = tonumber(now_text)
local answers = {}
for i, key in ipairs(KEYS) do
    local capacity = tonumber(ARGV[5 * i - 4])
    local period = tonumber(ARGV[5 * i - 3])
    local cost = tonumber(ARGV[5 * i - 2])
    local extra = tonumber(ARGV[5 * i - 1])
    local refund = tonumber(ARGV[5 * i])
    local state = redis.call('HMGET', key, 'tokens', 'at')
    local tokens = capacity
    if state[1] then
        -- a clock stepping back refills nothing
        local elapsed = math.max(0, now - tonumber(state[2]))
        tokens = tonumber(state[1]) + elapsed * capacity / period
    end
    tokens = math.min(capacity, math.min(capacity, tokens) + refund)
    local need = math.min(cost, capacity)   -- a batch over the capacity needs a full bucket
    if tokens >= need then
        tokens = tokens - cost
        local lease = math.max(0, math.min(extra, math.floor(tokens)))
        tokens = tokens - lease
        redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', now_text)
        local refill_ms = math.ceil((capacity - tokens) * period / capacity / 1000)
        redis.call('PEXPIRE', key, math.max(refill_ms, 1))
        answers[i] = {0, lease}
    else
        if refund > 0 then
            redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', now_text)
        end
        answers[i] = {math.ceil((need - tokens) * period / capacity), 0}
    end
end
return answers
"""


def bucket_key(api_key_id: int) -> str:
    return f"{KEY_PREFIX}{api_key_id}"


def _script_args(entries: list[tuple[int, Rate, int, int, int]]) -> tuple[list[str], list[int]]:
    """(api key id, rate, cost, lease, refund) per request -> KEYS, ARGV."""
    keys, args = [], []
    for api_key_id, rate, cost, lease, refund in entries:
        keys.append(bucket_key(api_key_id))
        args.extend((rate.tokens, rate.period_seconds * 1_000_000, max(cost, 1), lease, refund))
    return keys, args


def retry_after_seconds(wait_microseconds: float) -> int:
    """Retry-After is whole seconds, at least 1 (0 would invite an immediate retry)."""
    return max(1, math.ceil(wait_microseconds / 1_000_000))


def refuse(*, key_name: str, wait_microseconds: float) -> RateLimited:
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


# --- Sync: the DRF views (threads), exact ------------------------------------
_sync_client: redis.Redis | None = None
_sync_script = None
_sync_backoff = _Backoff()


def _client() -> redis.Redis:
    global _sync_client, _sync_script
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        _sync_script = _sync_client.register_script(_TAKE)  # EVALSHA; loaded again on NOSCRIPT
    return _sync_client


def rate_limit_take(*, api_key_id: int, key_name: str, rate: Rate, cost: int = 1) -> None:
    """Take `cost` tokens from the key's bucket; raises RateLimited when it cannot."""
    if _sync_backoff.open():
        LIMITER_ERRORS.inc()
        return
    client = _client()
    keys, args = _script_args([(api_key_id, rate, cost, 0, 0)])
    try:
        ((wait, _),) = _sync_script(keys=keys, args=args, client=client)
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


# --- Async: the event-loop intake, leasing -----------------------------------
class _Ask:
    """A request waiting for Redis."""

    __slots__ = ("api_key_id", "key_name", "rate", "cost", "lease", "refund", "future")

    def __init__(
        self, api_key_id: int, key_name: str, rate: Rate, cost: int, refund: int, future
    ) -> None:
        self.api_key_id, self.key_name, self.rate, self.cost = api_key_id, key_name, rate, cost
        self.lease, self.refund, self.future = 0, refund, future


class AsyncRateLimiter:
    """The intake's limiter, for one process's event loop.

    A request is served from the process's lease of its key when it can be
    (no Redis, no wait), refused at once while a refusal lasts, and otherwise
    asks Redis. Requests that ask while a call is in flight go together in the
    next call (one script run), which also renews the lease.
    """

    def __init__(self) -> None:
        self._leases: dict[int, list[float]] = {}  # api key id -> [tokens, usable until]
        self._refused: dict[int, float] = {}  # api key id -> refused until (cost 1)
        self._pending: list[_Ask] = []
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None
        self._script = None
        self._backoff = _Backoff()

    async def take(self, *, api_key_id: int, key_name: str, rate: Rate, cost: int = 1) -> None:
        """Take `cost` tokens of the key's bucket; raises RateLimited when it cannot."""
        now = time.monotonic()
        if self._from_lease(api_key_id, cost, now):
            return
        refused_until = self._refused.get(api_key_id, 0.0)
        if refused_until > now:
            raise refuse(key_name=key_name, wait_microseconds=(refused_until - now) * 1_000_000)
        if self._backoff.open():
            LIMITER_ERRORS.inc()
            return
        lease = self._leases.pop(api_key_id, None)  # too small or too old: given back with this ask
        refund = int(lease[0]) if lease else 0
        loop = asyncio.get_running_loop()
        ask = _Ask(api_key_id, key_name, rate, cost, refund, loop.create_future())
        self._pending.append(ask)
        if not self._busy:
            self._busy = True
            loop.create_task(self._drain(loop))
        await ask.future

    def _from_lease(self, api_key_id: int, cost: int, now: float) -> bool:
        lease = self._leases.get(api_key_id)
        if lease is None or lease[0] < cost or lease[1] <= now:
            return False
        lease[0] -= cost
        return True

    def _script_for(self, loop: asyncio.AbstractEventLoop):
        if self._loop is not loop:  # asyncio connections cannot cross event loops
            self._loop = loop
            self._client = aioredis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=TIMEOUT_SECONDS,
                socket_connect_timeout=TIMEOUT_SECONDS,
            )
            self._script = self._client.register_script(_TAKE)  # EVALSHA; loaded again on NOSCRIPT
        return self._script

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._pending:
                group = self._group()
                if not group:
                    continue
                keys, args = _script_args(
                    [(ask.api_key_id, ask.rate, ask.cost, ask.lease, ask.refund) for ask in group]
                )
                script = self._script_for(loop)
                try:
                    answers = await script(keys=keys, args=args, client=self._client)
                except (redis.RedisError, OSError) as error:
                    self._backoff.failed(error, len(group))
                    answers = [(0, 0)] * len(group)
                except Exception as error:  # noqa: BLE001 - every waiter must get an answer
                    for ask in group:
                        if not ask.future.done():
                            ask.future.set_exception(error)
                    continue
                self._answer(group, answers)
        finally:
            self._busy = False

    def _group(self) -> list[_Ask]:
        """The waiting requests that still need Redis; one lease asked per key."""
        now = time.monotonic()
        group, leasing = [], set()
        waiting, self._pending = self._pending, []
        for ask in waiting:
            if not ask.refund and self._from_lease(ask.api_key_id, ask.cost, now):
                ask.future.set_result(None)  # a lease came back while it waited
                continue
            lease_size = ask.rate.tokens // LEASE_DIVISOR
            if lease_size and ask.api_key_id not in leasing:
                leasing.add(ask.api_key_id)
                ask.lease = lease_size
            group.append(ask)
        return group

    def _answer(self, group: list[_Ask], answers) -> None:
        now = time.monotonic()
        for ask, (wait, leased) in zip(group, answers):
            if wait:
                if ask.cost == 1:
                    self._refused[ask.api_key_id] = now + wait / 1_000_000
                if not ask.future.done():
                    ask.future.set_exception(refuse(key_name=ask.key_name, wait_microseconds=wait))
                continue
            self._refused.pop(ask.api_key_id, None)
            if leased:
                held = self._leases.get(ask.api_key_id)
                tokens = leased + (held[0] if held and held[1] > now else 0)
                self._leases[ask.api_key_id] = [tokens, now + LEASE_SECONDS]
            if not ask.future.done():
                ask.future.set_result(None)
