"""The recipient's inbox: keyset pages, unread count, read/unread/archive."""

from __future__ import annotations

from django.core import signing
from django.db import connection, transaction

from common.errors import ClarionError, NotFound
from common.rows import named_rows
from notifications.inbox_items import ITEM_SQL, item_from_row
from notifications.selectors import unread_count  # noqa: F401  (part of the inbox's API)
from notifications.services.push import unread_changed_on_commit
from notifications.services.read_effects import notifications_read

STATUS_FILTERS = {
    # No status: the live inbox (read and unread, not archived).
    None: "n.archived_at IS NULL",
    "unread": "n.read_at IS NULL AND n.archived_at IS NULL",
    "read": "n.read_at IS NOT NULL AND n.archived_at IS NULL",
    "archived": "n.archived_at IS NOT NULL",
    "all": "TRUE",
}
MAX_LIMIT = 100
CURSOR_SALT = "clarion.inbox-cursor.v1"


class BadCursor(ClarionError):
    status = 400
    title = "Bad cursor"


def cursor_encode(*, recipient_id: int, notification_id: int) -> str:
    """An opaque cursor, signed and bound to its recipient: another recipient's
    cursor is refused rather than silently paging someone else's position."""
    return signing.Signer(salt=CURSOR_SALT).sign(f"{recipient_id}.{notification_id}")


def cursor_decode(*, recipient_id: int, cursor: str) -> int:
    """The notification id a cursor points after; BadCursor for anything else."""
    try:
        owner, _, value = signing.Signer(salt=CURSOR_SALT).unsign(cursor).partition(".")
        if int(owner) != recipient_id:
            raise ValueError
        notification_id = int(value)
        if not 0 <= notification_id < 2**63:
            raise ValueError
        return notification_id
    except (ValueError, signing.BadSignature):
        raise BadCursor(
            "The cursor is not one this API returned to you.",
            errors={"cursor": ["Invalid cursor."]},
        ) from None


def inbox_page(
    *, recipient_id: int, status: str | None, cursor: str | None, limit: int
) -> tuple[list[dict], str | None]:
    """Newest first; the cursor is the last id seen, so items arriving meanwhile
    (always newer) never shift a page."""
    condition = STATUS_FILTERS[status]
    before = cursor_decode(recipient_id=recipient_id, cursor=cursor) if cursor else 2**63 - 1
    with connection.cursor() as db:
        named_rows(db).execute(
            f"{ITEM_SQL} WHERE n.recipient_id = %s AND n.visible AND {condition} AND n.id < %s"
            " ORDER BY n.id DESC LIMIT %s",
            [recipient_id, before, limit + 1],
        )
        rows = db.fetchall()
    items = [item_from_row(row) for row in rows[:limit]]
    next_cursor = (
        cursor_encode(recipient_id=recipient_id, notification_id=rows[limit - 1].id)
        if len(rows) > limit
        else None
    )
    return items, next_cursor


def inbox_items_after(*, recipient_id: int, after_id: int, limit: int = 500) -> list[dict]:
    """Visible items newer than `after_id`, oldest first (for resuming a feed)."""
    with connection.cursor() as db:
        named_rows(db).execute(
            f"{ITEM_SQL} WHERE n.recipient_id = %s AND n.visible AND n.id > %s"
            " ORDER BY n.id LIMIT %s",
            [recipient_id, after_id, limit],
        )
        return [item_from_row(row) for row in db.fetchall()]


MARK_ACTIONS = {
    "read": "read_at = coalesce(read_at, now())",
    "unread": "read_at = NULL",
    "archive": "archived_at = coalesce(archived_at, now())",
}


def notification_mark(*, recipient_id: int, notification_id: str, action: str) -> dict:
    """Mark one of the recipient's own notifications; 404 for anyone else's."""
    try:
        nid = int(notification_id)
    except (TypeError, ValueError):
        raise NotFound("No such notification.") from None
    if not 0 < nid < 2**63:
        raise NotFound("No such notification.")
    with transaction.atomic(), connection.cursor() as db:
        db.execute(
            f"UPDATE notifications_notification SET {MARK_ACTIONS[action]}"
            " WHERE id = %s AND recipient_id = %s AND visible RETURNING id",
            [nid, recipient_id],
        )
        if db.fetchone() is None:
            raise NotFound("No such notification.")
        if action == "read":
            notifications_read([nid])
        named_rows(db).execute(f"{ITEM_SQL} WHERE n.id = %s", [nid])
        item = item_from_row(db.fetchone())
        unread_changed_on_commit(recipient_id=recipient_id)
    return item


def inbox_read_all(*, recipient_id: int) -> int:
    with transaction.atomic(), connection.cursor() as db:
        db.execute(
            "UPDATE notifications_notification SET read_at = now()"
            " WHERE recipient_id = %s AND visible AND read_at IS NULL AND archived_at IS NULL"
            " RETURNING id",
            [recipient_id],
        )
        read = [row[0] for row in db.fetchall()]
        count = len(read)
        if count:
            notifications_read(read)
            unread_changed_on_commit(recipient_id=recipient_id)
    return count
