"""What reading an in-app notification changes elsewhere: its external
deliveries still waiting (held by quiet hours, backing off after a failure,
or waiting on an open breaker) are not sent any more (`skipped`, reason
`read`), and producers subscribed to `notification.read` hear of it.

A delivery a send worker holds right now (reason `sending`) is left to
finish: its outcome is recorded under the claim's lease, and skipping it
here would lose that record of a message that did go out.
"""

from __future__ import annotations

from django.db import connection

from notifications.services.status_webhooks import status_events_record


def notifications_read(notification_ids: list[int]) -> int:
    """Call inside the transaction that marked them read; returns how many
    deliveries were skipped."""
    if not notification_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery SET status = 'skipped', reason = 'read',"
            " next_attempt_at = NULL, updated_at = now()"
            " WHERE notification_id = ANY(%s) AND status = 'queued'"
            " AND next_attempt_at > now() AND reason <> 'sending'",
            [notification_ids],
        )
        skipped = cursor.rowcount
    status_events_record("notification.read", notification_ids=notification_ids)
    return skipped
