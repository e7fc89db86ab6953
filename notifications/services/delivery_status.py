"""What providers report after a send: a delivery moves forward through
`sent → delivered → opened → clicked`, never back, or fails after all
(a bounce, an undeliverable SMS). One statement for any number of deliveries.
A delivery whose send is not recorded yet (`queued`, reason `sending`) moves
too: the callback may overtake the record.
"""

from __future__ import annotations

from django.db import connection, transaction

from common.choices import DeliveryStatus
from notifications.services.status_webhooks import status_events_record

# Where each reported status may come from.
_FROM = {
    DeliveryStatus.DELIVERED: ("sent",),
    DeliveryStatus.OPENED: ("sent", "delivered"),
    DeliveryStatus.CLICKED: ("sent", "delivered", "opened"),
    # A bounce or a carrier's refusal arrives after the provider accepted it.
    DeliveryStatus.FAILED: ("sent", "delivered"),
}


def deliveries_advance(
    *,
    status: str,
    delivery_ids: list[int] = (),
    provider_message_ids: list[str] = (),
    reason: str = "",
) -> list[int]:
    """Move these deliveries (by id or by the provider's message id) to
    `status` where that is forward; returns the ids that moved."""
    allowed = _FROM[DeliveryStatus(status)]
    if not delivery_ids and not provider_message_ids:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery SET status = %s, reason = %s, updated_at = now()"
            " WHERE (id = ANY(%s::bigint[]) OR (provider_message_id <> ''"
            "        AND provider_message_id = ANY(%s::text[])))"
            # Or still being sent: a callback can overtake the record of its send
            # (delivery/services/send.py keeps the status it finds then).
            " AND (status = ANY(%s::text[]) OR (status = 'queued' AND reason = 'sending'))"
            " RETURNING id",
            [status, reason, list(delivery_ids), list(provider_message_ids), list(allowed)],
        )
        moved = [row[0] for row in cursor.fetchall()]
        if moved:
            status_events_record(f"delivery.{status}", delivery_ids=moved)
    return moved
