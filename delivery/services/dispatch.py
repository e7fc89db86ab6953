"""Handing due deliveries to the send workers, on their event's priority queue.

A delivery is due when it is `queued` and its `next_attempt_at` has come:
at once for most, at the end of the recipient's quiet hours for the held ones
(reason `quiet_hours`), after the backoff for a retry. A claimed delivery
reads reason `sending` until its outcome is recorded. Claiming moves
`next_attempt_at` to the end of a lease, in one statement with `FOR UPDATE
SKIP LOCKED`, so concurrent sweeps never claim the same delivery; if the
worker holding it dies, the lease ends and the next sweep claims it again.
The send task (`delivery.services.send`) acts only on rows still carrying
its lease, so a stale or duplicate message changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import current_app as app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

SEND_TASK = "clarion.delivery.send"
SEND_CHUNK = 100

_CLAIM = """
WITH due AS (
    SELECT id FROM notifications_delivery
    WHERE status = 'queued' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications_delivery d
SET next_attempt_at = %(lease)s,
    reason = 'sending',
    updated_at = now()
FROM due, notifications_notification n, notifications_event e
WHERE d.id = due.id AND n.id = d.notification_id AND e.id = n.event_id
RETURNING d.id, d.channel, e.priority
"""


@dataclass(frozen=True)
class Claim:
    lease: datetime
    deliveries: list[tuple[int, str, str]]  # (delivery id, channel, priority)


def deliveries_claim_due(*, now: datetime | None = None, limit: int | None = None) -> Claim:
    """Claim up to `limit` due deliveries (oldest first) until the lease ends."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.CLARION["DELIVERY_LEASE_SECONDS"])
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM,
            {
                "now": now,
                "limit": limit or settings.CLARION["DELIVERY_CLAIM_BATCH"],
                "lease": lease,
            },
        )
        return Claim(lease, cursor.fetchall())


def deliveries_dispatch_due(*, now: datetime | None = None, max_rounds: int = 20) -> int:
    """Claim due deliveries and publish their sends, one message per (priority,
    channel) chunk, on the priority's queue. Returns how many were dispatched."""
    total = 0
    limit = settings.CLARION["DELIVERY_CLAIM_BATCH"]
    for _ in range(max_rounds):
        with transaction.atomic():
            claim = deliveries_claim_due(now=now, limit=limit)
        _publish(claim)
        total += len(claim.deliveries)
        if len(claim.deliveries) < limit:
            break
    if total:
        log.info("deliveries dispatched: %d", total)
    return total


def _publish(claim: Claim) -> None:
    groups: dict[tuple[str, str], list[int]] = {}
    for delivery_id, channel, priority in claim.deliveries:
        groups.setdefault((priority, channel), []).append(delivery_id)
    for (priority, channel), ids in groups.items():
        for start in range(0, len(ids), SEND_CHUNK):
            chunk = ids[start : start + SEND_CHUNK]
            try:
                app.send_task(
                    SEND_TASK,
                    kwargs={"delivery_ids": chunk, "lease": claim.lease.isoformat()},
                    queue=priority,
                )
            except Exception:  # noqa: BLE001 - the lease ends and a later sweep claims them again
                log.exception(
                    "publish of %d %s deliveries failed; they are claimed again after the lease",
                    len(chunk),
                    channel,
                )
