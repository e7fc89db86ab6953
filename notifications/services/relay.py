"""The relay: re-publishes events whose fan-out task went missing.

A publish can be lost between commit and broker (crash, Redis down) and a
task can die with its worker; either way the event row still says where its
fan-out stands. The relay finds events whose last publish is older than
RELAY_STALE_SECONDS (doubling with each relay of the same event, so a long
queue is not flooded with duplicates) and scheduled events that are due, and
publishes the page each one is waiting for. Rows being worked on are locked by
their page task and skipped (`FOR UPDATE SKIP LOCKED`), and a duplicate page
task is a no-op, so relaying too eagerly costs a little work, never a double
notification.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection, transaction

from notifications.publish import publish_fan_out_page

log = logging.getLogger(__name__)


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
                    relay_attempts = CASE WHEN e.status = 'scheduled' THEN 0 ELSE e.relay_attempts + 1 END,
                    status = CASE WHEN e.status = 'scheduled' THEN 'accepted' ELSE e.status END
                FROM locked WHERE e.id = locked.id
                RETURNING e.id, e.fanout_page, e.priority, e.relay_attempts
                """,
                {"stale": config["RELAY_STALE_SECONDS"], "limit": limit},
            )
            rows = cursor.fetchall()

        def publish() -> None:
            for event_id, page, priority, attempts in rows:
                if attempts:
                    log.warning("relay re-publishes event_id=%s page=%s attempt=%s", event_id, page, attempts)
                publish_fan_out_page(event_id=str(event_id), page=page, priority=priority)

        transaction.on_commit(publish)
    return len(rows)


def idempotency_keys_purge() -> int:
    """Forget idempotency keys older than IDEMPOTENCY_TTL_HOURS."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM notifications_idempotencykey WHERE created_at < now() - make_interval(hours => %s)",
            [settings.CLARION["IDEMPOTENCY_TTL_HOURS"]],
        )
        return cursor.rowcount
