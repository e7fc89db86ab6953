"""Status webhooks: producers' subscriptions to what happens to deliveries
and notifications (`delivery.sent`, …, `notification.read`).

A status change writes outbox rows (`StatusWebhookCall`), one per subscribed
endpoint, in the same transaction as the change; the delivery app's sweep
(`delivery/services/status_webhooks.py`) sends them, signed per Standard
Webhooks, and retries them like deliveries.

This runs on every send, and most deployments subscribe to nothing, so the
set of event types any endpoint subscribes to is cached (Django's cache,
SUBSCRIBED_CACHE_SECONDS, cleared when an endpoint is created or deleted):
with nothing subscribed a call costs one cache read and no query. An endpoint
created in another process while a stale "nothing" is cached starts
receiving within SUBSCRIBED_CACHE_SECONDS.

Endpoints receive the status events of every delivery of the deployment
(recipients and events are the deployment's, not a key's); the API key that
created an endpoint owns it (lists and deletes it).
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from django.db import connection

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "delivery.sent",
    "delivery.delivered",
    "delivery.failed",
    "delivery.dead",
    "delivery.opened",
    "delivery.clicked",
    "notification.read",
)

SUBSCRIBED_CACHE_KEY = "status-webhooks:subscribed-types"
SUBSCRIBED_CACHE_SECONDS = 10

# One call's columns and the payload's `timestamp` (RFC 3339, UTC, the change's
# transaction time); `webhook-id` is msg_ + 32 random hex digits.
_CALL_COLUMNS = """
    INSERT INTO notifications_statuswebhookcall
        (endpoint_id, message_id, event_type, payload, status, attempts, next_attempt_at,
         last_status_code, last_error, created_at, sent_at)
"""
_MESSAGE_ID = "'msg_' || replace(gen_random_uuid()::text, '-', '')"
_TIMESTAMP = """to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

_DELIVERY_CALLS = f"""
{_CALL_COLUMNS}
SELECT w.id, {_MESSAGE_ID}, %(type)s,
       jsonb_build_object(
           'type', %(type)s,
           'timestamp', {_TIMESTAMP},
           'data', jsonb_build_object(
               'delivery_id', d.id, 'event_id', n.event_id, 'recipient', r.external_id,
               'channel', d.channel, 'status', %(status)s, 'reason', d.reason)),
       'queued', 0, now(), NULL, '', now(), NULL
FROM notifications_delivery d
JOIN notifications_notification n ON n.id = d.notification_id
JOIN notifications_recipient r ON r.id = n.recipient_id
JOIN notifications_webhookendpoint w ON %(type)s = ANY(w.event_types)
WHERE d.id = ANY(%(ids)s::bigint[])
"""

_NOTIFICATION_CALLS = f"""
{_CALL_COLUMNS}
SELECT w.id, {_MESSAGE_ID}, %(type)s,
       jsonb_build_object(
           'type', %(type)s,
           'timestamp', {_TIMESTAMP},
           'data', jsonb_build_object(
               'notification_id', n.id, 'event_id', n.event_id, 'recipient', r.external_id)),
       'queued', 0, now(), NULL, '', now(), NULL
FROM notifications_notification n
JOIN notifications_recipient r ON r.id = n.recipient_id
JOIN notifications_webhookendpoint w ON %(type)s = ANY(w.event_types)
WHERE n.id = ANY(%(ids)s::bigint[])
"""


def status_events_record(
    event_type: str, *, delivery_ids: list[int] = (), notification_ids: list[int] = ()
) -> int:
    """Queue `event_type` for every endpoint subscribed to it, for these
    deliveries (delivery.*) or notifications (notification.read), in one
    statement. Returns how many calls were queued."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown status event type {event_type!r}")
    if event_type == "notification.read":
        sql, ids = _NOTIFICATION_CALLS, notification_ids
    else:
        sql, ids = _DELIVERY_CALLS, delivery_ids
    if not ids or event_type not in subscribed_event_types():
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            sql, {"type": event_type, "status": event_type.split(".", 1)[1], "ids": list(ids)}
        )
        return cursor.rowcount


def subscribed_event_types() -> frozenset[str]:
    """The event types at least one endpoint subscribes to (cached)."""
    try:
        cached = cache.get(SUBSCRIBED_CACHE_KEY)
    except Exception:  # noqa: BLE001 - the cache is an optimisation: a Redis outage costs a query
        log.warning("status webhooks: cache unreachable, reading subscriptions", exc_info=True)
        cached = None
    if cached is not None:
        return frozenset(cached)
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT unnest(event_types) FROM notifications_webhookendpoint")
        types = frozenset(row[0] for row in cursor.fetchall())
    try:
        cache.set(SUBSCRIBED_CACHE_KEY, sorted(types), SUBSCRIBED_CACHE_SECONDS)
    except Exception:  # noqa: BLE001 - see above
        pass
    return types


def subscribed_cache_clear() -> None:
    """After an endpoint is created or deleted (and committed)."""
    try:
        cache.delete(SUBSCRIBED_CACHE_KEY)
    except Exception:  # noqa: BLE001 - the entry then ends with its TTL
        log.warning("status webhooks: could not clear the subscriptions cache", exc_info=True)
