"""A circuit breaker per provider, its state in Redis so every worker shares it.

closed -> open: within a window of BREAKER_WINDOW_SECONDS, at least
BREAKER_MIN_CALLS calls and a share of failures of at least
BREAKER_FAILURE_RATIO. open -> half_open: after BREAKER_COOLDOWN_SECONDS the
next caller is let through alone as the probe (other callers wait while it is
out). half_open -> closed when the probe's failures are below the ratio, back
to open otherwise.
A probe that never reports (its worker died) lets another through after the
cooldown again.

Providers that are one service have one breaker. A webhook's failures
belong to its own destination: the webhook provider says `uses_breaker =
False` and names each message's destination (`destination_of`, the URL's
host and port), which gets a breaker of its own (`provider@host:port`), so
one broken receiver never stops the others and a failing one is skipped,
not hammered. Web push subscriptions (a message may reach several push
services) have none; their retries are per delivery. Destination breakers
are not exported as metrics (their number is unbounded).

Each transition is one Lua script, so concurrent workers cannot both take
the probe or miss a trip. When Redis cannot be reached the breaker lets
calls through: a provider outage must not become a Redis outage's victim,
and the retry policy still bounds what a failing provider costs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings

log = logging.getLogger(__name__)

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
KEY = "clarion:breaker:{}"
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_BACKOFF_SECONDS = 5.0

# KEYS[1] the breaker's hash; ARGV: now_ms, cooldown_ms
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, 0} end
local now = tonumber(ARGV[1])
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < until_ms then return {0, until_ms} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', now + tonumber(ARGV[2]))
return {2, 0}
"""

# KEYS[1]; ARGV: now_ms, successes, failures, window_ms, min_calls, ratio, cooldown_ms, probe
_RECORD = """
local now = tonumber(ARGV[1])
local ok, bad = tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
  if ARGV[8] ~= '1' then return state end
  if bad > 0 and bad >= tonumber(ARGV[6]) * (ok + bad) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[7]),
               'opened_at', now)
    return 'open'
  end
  redis.call('DEL', KEYS[1])
  return 'closed'
end
if state == 'open' then return state end
local start = tonumber(redis.call('HGET', KEYS[1], 'window') or '0')
if now - start > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'window', now, 'calls', 0, 'fails', 0)
end
local calls = redis.call('HINCRBY', KEYS[1], 'calls', ok + bad)
local fails = redis.call('HINCRBY', KEYS[1], 'fails', bad)
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[4]), tonumber(ARGV[7])) * 4)
if calls >= tonumber(ARGV[5]) and fails >= tonumber(ARGV[6]) * calls and fails > 0 then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[7]), 'opened_at', now)
  redis.call('PERSIST', KEYS[1])
  return 'open'
end
return 'closed'
"""


@dataclass(frozen=True)
class Permit:
    """May this provider be called now? `probe`: yes, as the half-open probe;
    `retry_at`: when refused, when to look again (epoch seconds)."""

    allowed: bool
    probe: bool = False
    retry_at: float | None = None


class _Redis:
    client: redis.Redis | None = None
    url: str = ""
    scripts: dict = {}
    down_until: float = 0.0


def _client() -> redis.Redis:
    if _Redis.client is None or _Redis.url != settings.REDIS_URL:
        _Redis.client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        _Redis.url = settings.REDIS_URL
        _Redis.scripts = {
            "allow": _Redis.client.register_script(_ALLOW),
            "record": _Redis.client.register_script(_RECORD),
        }
    return _Redis.client


def _run(script: str, name: str, args: list):
    if time.monotonic() < _Redis.down_until:
        return None
    try:
        _client()
        return _Redis.scripts[script](keys=[KEY.format(name)], args=args)
    except redis.RedisError as exc:
        _Redis.down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
        log.warning("breaker state unavailable, letting calls through: %r", exc)
        return None


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def breaker_allow(name: str, *, now: float | None = None) -> Permit:
    now = time.time() if now is None else now
    cfg = settings.CLARION
    answer = _run("allow", name, [_ms(now), _ms(cfg["BREAKER_COOLDOWN_SECONDS"])])
    if answer is None:
        return Permit(True)
    code, until_ms = int(answer[0]), int(answer[1])
    if code == 0:
        return Permit(False, retry_at=until_ms / 1000)
    return Permit(True, probe=code == 2)


def breakers_allow(names: list[str], *, now: float | None = None) -> dict[str, Permit]:
    """breaker_allow for several breakers in one round trip."""
    if len(names) <= 1:
        return {name: breaker_allow(name, now=now) for name in names}
    now = time.time() if now is None else now
    args = [_ms(now), _ms(settings.CLARION["BREAKER_COOLDOWN_SECONDS"])]
    answers = _pipeline("allow", [(name, args) for name in names])
    permits = {}
    for name, answer in zip(names, answers):
        if answer is None:
            permits[name] = Permit(True)
            continue
        code, until_ms = int(answer[0]), int(answer[1])
        permits[name] = (
            Permit(False, retry_at=until_ms / 1000) if code == 0 else Permit(True, probe=code == 2)
        )
    return permits


def breakers_record(counts: dict[str, tuple[int, int, bool]], *, now: float | None = None) -> None:
    """breaker_record for several breakers (name -> successes, failures, probe)
    in one round trip."""
    counts = {name: c for name, c in counts.items() if c[0] or c[1]}
    if len(counts) <= 1:
        for name, (ok, bad, probe) in counts.items():
            breaker_record(name, successes=ok, failures=bad, probe=probe, now=now)
        return
    now = time.time() if now is None else now
    calls = [(name, _record_args(now, ok, bad, probe)) for name, (ok, bad, probe) in counts.items()]
    for (name, _), state in zip(calls, _pipeline("record", calls)):
        if state in (OPEN, OPEN.encode()):
            log.warning("provider %s: circuit open", name)


def _pipeline(script: str, calls: list[tuple[str, list]]) -> list:
    """Run one script for several breakers in a pipeline; Nones when Redis is away."""
    if time.monotonic() < _Redis.down_until:
        return [None] * len(calls)
    try:
        client = _client()
        pipe = client.pipeline(transaction=False)
        for name, args in calls:
            _Redis.scripts[script](keys=[KEY.format(name)], args=args, client=pipe)
        return pipe.execute()
    except redis.RedisError as exc:
        _Redis.down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
        log.warning("breaker state unavailable, letting calls through: %r", exc)
        return [None] * len(calls)


def _record_args(now: float, successes: int, failures: int, probe: bool) -> list:
    cfg = settings.CLARION
    return [
        _ms(now),
        successes,
        failures,
        _ms(cfg["BREAKER_WINDOW_SECONDS"]),
        cfg["BREAKER_MIN_CALLS"],
        cfg["BREAKER_FAILURE_RATIO"],
        _ms(cfg["BREAKER_COOLDOWN_SECONDS"]),
        "1" if probe else "0",
    ]


def breaker_record(
    name: str, *, successes: int, failures: int, probe: bool = False, now: float | None = None
) -> str | None:
    """Count a call's results; returns the state after (None without Redis)."""
    if not successes and not failures:
        return None
    now = time.time() if now is None else now
    state = _run("record", name, _record_args(now, successes, failures, probe))
    if state is None:
        return None
    state = state.decode() if isinstance(state, bytes) else str(state)
    if state == OPEN:
        log.warning("provider %s: circuit open", name)
    return state


def breaker_states(names: list[str]) -> dict[str, str]:
    """Each provider's state, as operators see it (an open breaker whose
    cooldown has passed shows half_open: its next call is the probe)."""
    client = _client()
    pipe = client.pipeline()
    for name in names:
        pipe.hmget(KEY.format(name), "state", "until")
    now_ms = _ms(time.time())
    states = {}
    for name, (state, until) in zip(names, pipe.execute(), strict=True):
        state = (state or b"closed").decode()
        if state == OPEN and until and int(until) <= now_ms:
            state = HALF_OPEN
        states[name] = state
    return states


def breaker_reset(name: str) -> None:
    _client().delete(KEY.format(name))
