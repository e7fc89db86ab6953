"""Storing rendered content on deliveries rendered ahead of sending (digests)."""

from __future__ import annotations

from typing import NamedTuple

import orjson
from django.db import connection


class RenderedContent(NamedTuple):
    """The content rendered for one delivery, or None and the template's error."""

    event_id: str
    recipient_id: int
    channel: str
    content: dict | None
    error: str = ""


def deliveries_store_content(rows: list[RenderedContent]) -> None:
    """The content of each such delivery, or, where its template failed, the
    delivery failed with reason `template` and the error in its attempt log.
    Two statements."""
    rendered = [row for row in rows if row.content is not None]
    broken = [row for row in rows if row.content is None]
    with connection.cursor() as cursor:
        if rendered:
            cursor.execute(
                """
                UPDATE notifications_delivery d SET content = v.content
                FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::jsonb[])
                    AS v(event_id, recipient_id, channel, content)
                JOIN notifications_notification n
                    ON n.event_id = v.event_id AND n.recipient_id = v.recipient_id
                WHERE d.notification_id = n.id AND d.channel = v.channel AND d.status = 'queued'
                """,
                [
                    [r.event_id for r in rendered],
                    [r.recipient_id for r in rendered],
                    [r.channel for r in rendered],
                    [orjson.dumps(r.content).decode() for r in rendered],
                ],
            )
        if broken:
            cursor.execute(
                """
                WITH failed AS (
                    UPDATE notifications_delivery d
                    SET status = 'failed', reason = 'template', next_attempt_at = NULL,
                        attempts = attempts + 1, updated_at = now()
                    FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::text[])
                        AS v(event_id, recipient_id, channel, error)
                    JOIN notifications_notification n
                        ON n.event_id = v.event_id AND n.recipient_id = v.recipient_id
                    WHERE d.notification_id = n.id AND d.channel = v.channel AND d.status = 'queued'
                    RETURNING d.id, v.error
                )
                INSERT INTO notifications_deliveryattempt (delivery_id, created_at, response, error)
                SELECT id, now(), '', error FROM failed
                """,
                [
                    [r.event_id for r in broken],
                    [r.recipient_id for r in broken],
                    [r.channel for r in broken],
                    [r.error for r in broken],
                ],
            )
