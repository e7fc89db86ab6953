"""One pending fan-out wake-up per priority instead of one Celery message per commit.

A worker that fans out small events (explicit recipients only) takes, in its
priority lane, every such event still waiting (services/fanout_small.py). So
once a message for a priority is queued, later small events of that priority
need no message of their own: the queued one's sweep will find them. Under
load this turns hundreds of messages a second (each a broker round trip, an
ack, a task start and a query in a worker) into a few.

The protocol, with a Redis key per priority on the broker:

- publisher, after the events committed: ``wake_claim(priority)`` (SET NX with
  a TTL). Won: publish the message. Lost: a message is pending; skip.
- sweeper of the wake-up, in the lane, *after* it has written and pushed
  what waited: ``wake_release(priority)`` (DEL), then it reads what waits
  again; when a small event does, it claims the key back and sweeps once
  more (services/fanout_small._wake_up_kept). Any other sweep releases the
  key before it reads.

An event whose publisher lost the claim committed before that loss, and the
key's holder releases it only after the loss (else the claim would have
won) and reads again after releasing: it sees the event. Every release is
followed by a read of what waits by the releaser. A publish that fails
releases the key. A message lost with its key (broker restart) or a key whose message was
lost (worker killed before starting it) leaves events waiting with an empty
queue: the relay re-publishes those after RELAY_DEAD_PAGE_SECONDS, and the key
expires after WAKE_TTL_SECONDS whatever happens. Every failure here is a
delay, never a lost or doubled notification; a Redis error counts as "no
message pending" and publishes.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings

log = logging.getLogger(__name__)

# Longer than a sweep takes and than a message waits in a healthy queue; a
# key outliving its message only means extra messages, never missing ones.
WAKE_TTL_SECONDS = 10
_clients: dict[str, redis.Redis] = {}


def _key(priority: str) -> str:
    return f"clarion:fanout:wake:{priority}"


def _client_for(broker_url: str | None) -> redis.Redis:
    """A client of CELERY_BROKER_URL, read at each call: publishers and workers
    share that setting, and the key must live beside its message."""
    url = broker_url or settings.CELERY_BROKER_URL
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )
    return client


def wake_claim(priority: str, broker_url: str | None = None) -> bool:
    """True when the caller must publish a message for `priority` (none pending)."""
    try:
        return bool(_client_for(broker_url).set(_key(priority), 1, nx=True, ex=WAKE_TTL_SECONDS))
    except redis.RedisError:
        log.warning("fan-out wake-up key unavailable; publishing", exc_info=True)
        return True


def wake_release(priority: str, broker_url: str | None = None) -> None:
    """The sweep of `priority` starts now: events committed from here on need a new message."""
    try:
        _client_for(broker_url).delete(_key(priority))
    except redis.RedisError:
        # The key expires by itself; until then publishers skip, and the relay
        # covers events left waiting with an empty queue.
        log.warning("fan-out wake-up key not released", exc_info=True)
