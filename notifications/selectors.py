"""Reads of the notification domain."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from notifications.models import Event, NotificationType

TYPE_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class TypeInfo:
    id: int
    key: str
    category: str
    priority: str
    channels: tuple[str, ...]
    required_channels: tuple[str, ...]


_type_cache: dict[str, tuple[float, TypeInfo]] = {}


def notification_types_by_key(keys: set[str]) -> dict[str, TypeInfo]:
    """Active notification types by key, from a short in-process cache.

    Only hits are cached: a type created a moment ago is found at once; a
    retired one is refused within TYPE_CACHE_SECONDS.
    """
    now = time.monotonic()
    found: dict[str, TypeInfo] = {}
    missing = []
    for key in keys:
        cached = _type_cache.get(key)
        if cached and cached[0] > now:
            found[key] = cached[1]
        else:
            missing.append(key)
    if missing:
        rows = NotificationType.objects.filter(
            key__in=missing, retired_at__isnull=True
        ).values_list(
            "id", "key", "category", "priority", "channels", "required_channels", named=True
        )
        for row in rows:
            info = TypeInfo(
                row.id,
                row.key,
                row.category,
                row.priority,
                tuple(row.channels),
                tuple(row.required_channels),
            )
            _type_cache[info.key] = (now + TYPE_CACHE_SECONDS, info)
            found[info.key] = info
    return found


def notification_types_cached(keys: set[str]) -> dict[str, TypeInfo]:
    """The types of these keys that the in-process cache holds (no database):
    for callers that must not block, e.g. the intake's event loop."""
    now = time.monotonic()
    found: dict[str, TypeInfo] = {}
    for key in keys:
        cached = _type_cache.get(key)
        if cached and cached[0] > now:
            found[key] = cached[1]
    return found


def fanout_backlog_ages() -> dict[str, float]:
    """Seconds the oldest event of each priority has waited for its next
    fan-out page (0.0: none waiting), from its last publish (`enqueued_at`).

    Per priority, two index probes and no scan, however long the backlog: the
    head of the lane (the oldest accepted event by id, `event_waiting_idx`) and
    the oldest publish of the events mid-fan-out (`event_processing_idx`). The
    lane head is the event fanned out next, so its wait is the lane's wait.
    """
    priorities = list(settings.PRIORITIES)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.priority, extract(epoch FROM now() - LEAST(
                (SELECT e.enqueued_at FROM notifications_event e
                 WHERE e.status = 'accepted' AND e.priority = p.priority ORDER BY e.id LIMIT 1),
                (SELECT min(e.enqueued_at) FROM notifications_event e
                 WHERE e.status = 'processing' AND e.priority = p.priority)))
            FROM unnest(%s::text[]) AS p(priority)
            """,
            [priorities],
        )
        return {priority: max(0.0, float(age or 0)) for priority, age in cursor.fetchall()}


def notification_type_cache_clear() -> None:
    _type_cache.clear()


def event_get(*, event_id: str) -> Event | None:
    try:
        uuid.UUID(event_id)
    except (ValueError, TypeError, AttributeError):
        return None
    return Event.objects.select_related("type").filter(id=event_id).first()


def event_delivery_counts(
    *, event_id: str
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Counts by channel and status, and of skipped deliveries by channel and
    reason; in-app from the notifications themselves."""
    counts: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE read_at IS NULL),
                   count(*) FILTER (WHERE read_at IS NOT NULL)
            FROM notifications_notification WHERE event_id = %s AND visible
            """,
            [event_id],
        )
        delivered, opened = cursor.fetchone()
        if delivered or opened:
            counts["in_app"] = {"delivered": delivered, "opened": opened}
        cursor.execute(
            """
            SELECT d.channel, d.status, d.reason, count(*)
            FROM notifications_delivery d
            JOIN notifications_notification n ON n.id = d.notification_id
            WHERE n.event_id = %s
            GROUP BY d.channel, d.status, d.reason
            """,
            [event_id],
        )
        for channel, status, reason, count in cursor.fetchall():
            by_status = counts.setdefault(channel, {})
            by_status[status] = by_status.get(status, 0) + count
            if status == "skipped" or reason:
                by_reason = reasons.setdefault(channel, {})
                by_reason[reason] = by_reason.get(reason, 0) + count
    return counts, reasons


def unread_count(*, recipient_id: int) -> int:
    """The recipient's visible, unread, unarchived notifications: one lookup of
    the counter the triggers keep exact (models.UnreadCount); no row is 0."""
    with connection.cursor() as db:
        db.execute(
            "SELECT count FROM notifications_unreadcount WHERE recipient_id = %s", [recipient_id]
        )
        found = db.fetchone()
    return found[0] if found else 0  # the one column: count
