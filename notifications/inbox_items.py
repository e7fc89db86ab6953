"""The inbox item: one SELECT shape and its JSON, shared by the API and the websocket."""
from __future__ import annotations

from notifications.sqljson import from_db_json

ITEM_SQL = """
    SELECT n.id, t.key, t.category, n.title, n.body, n.url, e.actor, e.data,
           n.created_at, n.read_at, n.archived_at
    FROM notifications_notification n
    JOIN notifications_event e ON e.id = n.event_id
    JOIN notifications_notificationtype t ON t.id = e.type_id
"""


def item_from_row(row: tuple) -> dict:
    return {
        "id": str(row[0]),
        "type": row[1],
        "category": row[2],
        "title": row[3],
        "body": row[4],
        "url": row[5] or None,
        "actor": row[6] or None,
        "data": from_db_json(row[7]),
        "created_at": row[8],
        "read_at": row[9],
        "archived_at": row[10],
    }
