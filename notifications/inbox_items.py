"""The inbox item: one SELECT shape and its JSON, shared by the API and the websocket.

Rows are read by name: run the query on a cursor given `common.rows.named_rows`.
"""

from __future__ import annotations

from common.sqljson import from_db_json

ITEM_COLUMNS = """n.id, t.key AS type, t.category, n.title, n.body, n.url, e.actor, e.data,
           n.created_at, n.read_at, n.archived_at"""
ITEM_FROM = """
    FROM notifications_notification n
    JOIN notifications_event e ON e.id = n.event_id
    JOIN notifications_notificationtype t ON t.id = e.type_id
"""
ITEM_SQL = f"SELECT {ITEM_COLUMNS}{ITEM_FROM}"


def item_sql(*more_columns: str) -> str:
    """ITEM_SQL with more columns in front (e.g. `n.recipient_id`)."""
    return f"SELECT {', '.join(more_columns)}, {ITEM_COLUMNS}{ITEM_FROM}"


def item_from_row(row) -> dict:
    """The item's JSON from a named row of ITEM_SQL."""
    return {
        "id": str(row.id),
        "type": row.type,
        "category": row.category,
        "title": row.title,
        "body": row.body,
        "url": row.url or None,
        "actor": row.actor or None,
        "data": from_db_json(row.data),
        "created_at": row.created_at,
        "read_at": row.read_at,
        "archived_at": row.archived_at,
    }
