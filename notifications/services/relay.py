"""The relay: re-publishes events whose fan-out task went missing.

A publish can be lost between commit and broker (crash, Redis down) and a
task can die with its worker; either way the event row still says where its
fan-out stands. The relay publishes the page each of these is waiting for:

- events whose last publish is older than RELAY_STALE_SECONDS (doubling with
  each relay of the same event, so a long queue is not flooded with
  duplicates);
- sooner, after RELAY_DEAD_PAGE_SECONDS, events whose page began after its
  publish and is no longer held by a transaction (a SIGKILLed worker), and
  events whose queue is empty (nothing explains the wait but a lost
  message, or one held by a worker that died before starting it);
- scheduled events that are due. Rows being worked on are locked by
their page task and skipped (`FOR UPDATE SKIP LOCKED`), and a duplicate page
task is a no-op, so relaying too eagerly costs a little work, never a double
notification.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection, transaction

from notifications.publish import publish_fan_out_page

log = logging.getLogger(__name__)
_broker: redis.Redis | None = None


def events_relay(*, limit: int | None = None) -> int:
    """Publish due and stale events; returns how many were published."""
    config = settings.CLARION
    limit = limit or config["RELAY_BATCH"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH due AS (
                    SELECT id FROM notifications_event
                    WHERE status IN ('accepted', 'processing')
                      AND enqueued_at < now() - make_interval(
                            secs => %(stale)s * power(2, least(relay_attempts, 8)))
                    UNION
                    -- Published a while ago and (a) its page began and is no
                    -- longer running (SKIP LOCKED below leaves out rows a page
                    -- holds): its worker died mid-page; or (b) its queue is
                    -- empty, so no backlog explains the wait: the message was
                    -- lost, or held by a worker that died before starting it.
                    SELECT id FROM notifications_event
                    WHERE status IN ('accepted', 'processing')
                      AND enqueued_at < now() - make_interval(secs => %(dead)s)
                      AND ((page_started_at >= enqueued_at
                            AND page_started_at < now() - make_interval(secs => %(dead)s))
                           OR priority = ANY(%(idle)s::text[]))
                    UNION ALL
                    SELECT id FROM notifications_event
                    WHERE status = 'scheduled' AND send_at <= now()
                ),
                locked AS (
                    SELECT e.id FROM notifications_event e JOIN due USING (id)
                    ORDER BY e.enqueued_at
                    LIMIT %(limit)s
                    FOR UPDATE OF e SKIP LOCKED
                )
                UPDATE notifications_event e
                SET enqueued_at = now(),
                    relay_attempts = CASE WHEN e.status = 'scheduled' THEN 0
                                          ELSE e.relay_attempts + 1 END,
                    status = CASE WHEN e.status = 'scheduled' THEN 'accepted' ELSE e.status END
                FROM locked WHERE e.id = locked.id
                RETURNING e.id, e.fanout_page, e.priority, e.relay_attempts
                """,
                {
                    "stale": config["RELAY_STALE_SECONDS"],
                    "dead": config["RELAY_DEAD_PAGE_SECONDS"],
                    "idle": idle_queues(),
                    "limit": limit,
                },
            )
            rows = cursor.fetchall()

        def publish() -> None:
            for event_id, page, priority, attempts in rows:
                if attempts:
                    log.warning(
                        "relay re-publishes event_id=%s page=%s attempt=%s",
                        event_id,
                        page,
                        attempts,
                    )
                publish_fan_out_page(event_id=str(event_id), page=page, priority=priority)

        transaction.on_commit(publish)
    return len(rows)


def idle_queues() -> list[str]:
    """The priority queues with no message waiting (none when the broker is unreachable)."""
    global _broker
    try:
        if _broker is None:
            _broker = redis.Redis.from_url(
                settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2
            )
        pipe = _broker.pipeline(transaction=False)
        for queue in settings.PRIORITIES:
            pipe.llen(queue)
        return [queue for queue, depth in zip(settings.PRIORITIES, pipe.execute()) if depth == 0]
    except redis.RedisError:
        log.warning("relay: queue depths unavailable; waiting for the stale time", exc_info=True)
        return []


def idempotency_keys_purge() -> int:
    """Forget idempotency keys older than IDEMPOTENCY_TTL_HOURS."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM notifications_idempotencykey"
            " WHERE created_at < now() - make_interval(hours => %s)",
            [settings.CLARION["IDEMPOTENCY_TTL_HOURS"]],
        )
        return cursor.rowcount
