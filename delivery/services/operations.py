"""Operator actions on deliveries (the admin calls these)."""

from __future__ import annotations

from django.db import connection

# Skips an operator may undo: the ones no preference or limit decided.
REQUEUEABLE = "(status IN ('failed', 'dead') OR (status = 'skipped' AND reason = 'no_provider'))"


def deliveries_send_now(*, delivery_ids: list[int]) -> int:
    """Release deliveries held by quiet hours: the next dispatch sweep sends them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery"
            " SET next_attempt_at = now(), reason = '', updated_at = now()"
            " WHERE id = ANY(%s) AND status = 'queued' AND next_attempt_at > now()",
            [delivery_ids],
        )
        return cursor.rowcount


def deliveries_requeue(*, delivery_ids: list[int]) -> int:
    """Queue failed or provider-less deliveries again, due now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery"
            " SET status = 'queued', reason = '', next_attempt_at = now(),"
            f" updated_at = now() WHERE id = ANY(%s) AND {REQUEUEABLE}",
            [delivery_ids],
        )
        return cursor.rowcount
