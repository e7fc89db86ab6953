"""Who has an open inbox socket, in Redis, so a fan-out page sends channel-layer
messages only to recipients who can receive them.

- `clarion:rt:online` — a set of recipient ids with at least one socket;
- `clarion:rt:conns:<recipient id>` — that recipient's socket channel names,
  expiring unless a socket refreshes it (any client frame, e.g. ping).

A server that dies without disconnecting leaves ids in the online set; the
presence sweep removes those whose connection set has expired. A stale id
costs one wasted group send, never a missed one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis
from django.conf import settings

ONLINE_KEY = "clarion:rt:online"
CONNS_PREFIX = "clarion:rt:conns:"
CONNECTION_TTL_SECONDS = 90
CHUNK = 2000

_CONNECT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""
_DISCONNECT = """
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"""

_sync_client: redis.Redis | None = None
_async_clients: dict[int, aioredis.Redis] = {}


def sync_client() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5
        )
    return _sync_client


def async_client() -> aioredis.Redis:
    """One client per event loop (asyncio connections cannot cross loops)."""
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5, max_connections=2000
        )
        _async_clients[loop_id] = client
    return client


def conns_key(recipient_id: int) -> str:
    return f"{CONNS_PREFIX}{recipient_id}"


async def connection_opened(*, recipient_id: int, channel_name: str) -> None:
    await async_client().eval(
        _CONNECT,
        2,
        conns_key(recipient_id),
        ONLINE_KEY,
        channel_name,
        recipient_id,
        CONNECTION_TTL_SECONDS,
    )


async def connection_refreshed(*, recipient_id: int, channel_name: str) -> None:
    await connection_opened(recipient_id=recipient_id, channel_name=channel_name)


async def connection_closed(*, recipient_id: int, channel_name: str) -> None:
    await async_client().eval(
        _DISCONNECT, 2, conns_key(recipient_id), ONLINE_KEY, channel_name, recipient_id
    )


def online_among(recipient_ids: Iterable[int]) -> list[int]:
    """The recipients of `recipient_ids` that have a socket open.

    When fewer recipients are online than asked about (the usual case for a
    big fan-out), the online set itself is read and intersected here;
    otherwise SMISMEMBER is asked, one round trip per 2,000 ids.
    """
    ids = list(recipient_ids)
    if not ids:
        return []
    client = sync_client()
    online_count = client.scard(ONLINE_KEY)
    if online_count == 0:
        return []
    if online_count < len(ids):
        members = {int(member) for member in client.smembers(ONLINE_KEY)}
        return [rid for rid in ids if rid in members]
    online: list[int] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        flags = client.smismember(ONLINE_KEY, chunk)
        online.extend(rid for rid, flag in zip(chunk, flags) if flag)
    return online


def presence_sweep() -> int:
    """Drop online ids whose connection set expired (their server died)."""
    client = sync_client()
    removed = 0
    cursor = 0
    while True:
        cursor, members = client.sscan(ONLINE_KEY, cursor=cursor, count=1000)
        if members:
            pipe = client.pipeline(transaction=False)
            for member in members:
                pipe.exists(conns_key(int(member)))
            stale = [m for m, alive in zip(members, pipe.execute()) if not alive]
            if stale:
                removed += client.srem(ONLINE_KEY, *stale)
        if cursor == 0:
            return removed
