"""Operator actions on deliveries (the admin calls these)."""

from __future__ import annotations

from django.db import connection

from notifications.services.deliveries import ReplaySelection, deliveries_replay


def deliveries_send_now(*, delivery_ids: list[int]) -> int:
    """Release deliveries held by quiet hours, a retry's backoff or an open
    breaker: the next dispatch sweep sends them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery"
            " SET next_attempt_at = now(), reason = '', updated_at = now()"
            " WHERE id = ANY(%s) AND status = 'queued' AND next_attempt_at > now()",
            [delivery_ids],
        )
        return cursor.rowcount


def deliveries_requeue(*, delivery_ids: list[int]) -> int:
    """Replay failed, dead or provider-less deliveries, due now."""
    return deliveries_replay(ReplaySelection(ids=sorted(set(delivery_ids)))) if delivery_ids else 0
