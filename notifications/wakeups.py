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
- sweeper, in the lane, *before* it reads the waiting events:
  ``wake_release(priority)`` (DEL).

An event committed before a publisher lost the claim is read by the pending
message's sweep, which releases the key only after that loss (else the claim
would have won) and reads after releasing. A publish that fails releases the
key. A message lost with its key (broker restart) or a key whose message was
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
_client: redis.Redis | None = None
_client_url: str | None = None


def _key(priority: str) -> str:
    return f"clarion:fanout:wake:{priority}"


def _broker() -> redis.Redis:
    """A client of the broker the messages go to (followed if the setting
    changes: the key and the message must live on the same server)."""
    global _client, _client_url
    url = settings.CELERY_BROKER_URL
    if _client is None or _client_url != url:
        _client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _client_url = url
    return _client


def wake_claim(priority: str) -> bool:
    """True when the caller must publish a message for `priority` (none pending)."""
    try:
        return bool(_broker().set(_key(priority), 1, nx=True, ex=WAKE_TTL_SECONDS))
    except redis.RedisError:
        log.warning("fan-out wake-up key unavailable; publishing", exc_info=True)
        return True


def wake_release(priority: str) -> None:
    """The sweep of `priority` starts now: events committed from here on need a new message."""
    try:
        _broker().delete(_key(priority))
    except redis.RedisError:
        # The key expires by itself; until then publishers skip, and the relay
        # covers events left waiting with an empty queue.
        log.warning("fan-out wake-up key not released", exc_info=True)
