"""Hints to open websockets that the database has something new.

The database stays the truth; these are best-effort nudges. A lost hint is
repaired by the client: every notification frame names the recipient's
previous notification id, so a client that sees a gap asks to `resume`.
Only recipients with an open socket cost a channel-layer send.
"""

from __future__ import annotations

import logging

from channels.layers import get_channel_layer
from django.db import transaction
from rest_framework.utils.encoders import JSONEncoder

from common.prepared import prepared_cursor
from common.rows import named_rows
from notifications.inbox_items import item_from_row, item_sql
from notifications.selectors import unread_count
from realtime import loop, presence

log = logging.getLogger(__name__)
_encoder = JSONEncoder()
SEND_BATCH = 250  # group sends per group_send_many call (one Lua script per Redis host)


def group_name(recipient_id: int) -> str:
    return f"inbox.{recipient_id}"


def json_safe(item: dict) -> dict:
    """Datetimes as the REST API writes them; the channel layer carries plain data."""
    return {
        key: (_encoder.default(value) if hasattr(value, "isoformat") else value)
        for key, value in item.items()
    }


def notifications_created_on_commit(*, event_id: str, recipient_ids: list[int]) -> None:
    """After the fan-out page commits, tell the connected recipients among these."""
    transaction.on_commit(
        lambda: notifications_created(event_id=event_id, recipient_ids=recipient_ids)
    )


def notifications_created(*, event_id: str, recipient_ids: list[int]) -> int:
    """Push the new notifications of `event_id` to the online recipients; returns sends made."""
    return _push(
        recipient_ids,
        "n.event_id = %s AND n.recipient_id = ANY(%s)",
        lambda online: [event_id, online],
    )


def digests_created_on_commit(*, event_ids: list[str], recipient_ids: list[int]) -> None:
    """After digests commit: each (window's first event, recipient) pair is one new notification."""
    pairs_created_on_commit(list(zip(event_ids, recipient_ids)))


def pairs_created_on_commit(pairs: list[tuple[str, int]]) -> None:
    """After commit, push the new notifications named by (event id, recipient id)."""
    transaction.on_commit(lambda: notifications_pairs_created(pairs))


def notifications_pairs_created(pairs: list[tuple[str, int]]) -> int:
    recipient_ids = list(dict.fromkeys(rid for _, rid in pairs))

    def params_for(online: list[int]) -> list:
        wanted = set(online)
        chosen = [(event_id, rid) for event_id, rid in pairs if rid in wanted]
        return [[event_id for event_id, _ in chosen], [rid for _, rid in chosen]]

    return _push(
        recipient_ids,
        "(n.event_id, n.recipient_id) IN (SELECT * FROM unnest(%s::uuid[], %s::bigint[]))",
        params_for,
    )


def _push(recipient_ids: list[int], where: str, params_for) -> int:
    try:
        online = presence.online_among(recipient_ids)
        if not online:
            return 0
        with prepared_cursor() as cursor:
            named_rows(cursor).execute(
                f"""
                SELECT sub.*,
                    -- BETWEEN, not `=`: with an equality the planner drops recipient_id
                    -- from the ORDER BY and, on a table dominated by one recipient, may
                    -- walk the primary key backward over everyone else's rows (60,000
                    -- for a recipient quiet since a busy one got 60,000). This order only
                    -- notification_inbox_idx gives: one index probe.
                    (SELECT p.id FROM notifications_notification p
                     WHERE p.recipient_id BETWEEN sub.recipient_id AND sub.recipient_id
                       AND p.visible AND p.id < sub.id
                     ORDER BY p.recipient_id, p.id DESC LIMIT 1) AS previous_id,
                    coalesce(c.count, 0) AS unread_count
                FROM (
                    {item_sql("n.recipient_id")}
                    WHERE {where} AND n.visible
                ) sub
                LEFT JOIN notifications_unreadcount c ON c.recipient_id = sub.recipient_id
                ORDER BY sub.id
                """,
                params_for(online),
            )
            rows = cursor.fetchall()
        messages = [
            (
                group_name(row.recipient_id),
                {
                    "type": "inbox.notification",
                    "notification": json_safe(item_from_row(row)),
                    "previous_id": str(row.previous_id) if row.previous_id is not None else None,
                    "unread_count": row.unread_count,
                },
            )
            for row in rows
        ]
        _send_all(messages)
        return len(messages)
    except Exception:  # noqa: BLE001 - a hint must never fail the fan-out; clients repair via resume
        log.exception("realtime push failed for %d recipients", len(recipient_ids))
        return 0


def unread_changed_on_commit(*, recipient_id: int) -> None:
    transaction.on_commit(lambda: unread_changed(recipient_id=recipient_id))


def unread_changed(*, recipient_id: int) -> None:
    """Tell every open tab and device of the recipient its new unread count."""
    try:
        if not presence.online_among([recipient_id]):
            return
        count = unread_count(recipient_id=recipient_id)
        _send_all([(group_name(recipient_id), {"type": "inbox.unread", "count": count})])
    except Exception:  # noqa: BLE001
        log.exception("realtime unread push failed recipient_id=%s", recipient_id)


def tokens_revoked_on_commit(*, recipient_id: int, before_ms: int, erased: bool) -> None:
    transaction.on_commit(
        lambda: tokens_revoked(recipient_id=recipient_id, before_ms=before_ms, erased=erased)
    )


def tokens_revoked(*, recipient_id: int, before_ms: int, erased: bool) -> None:
    """Close the recipient's open sockets that a revocation or an erasure ended
    (each socket decides: erasure ends all, revocation those of older tokens)."""
    try:
        if not presence.online_among([recipient_id]):
            return
        message = {"type": "inbox.revoked", "before_ms": before_ms, "erased": erased}
        _send_all([(group_name(recipient_id), message)])
    except Exception:  # noqa: BLE001 - the database already refuses the tokens
        log.exception("realtime revoke push failed recipient_id=%s", recipient_id)


def _send_all(messages: list[tuple[str, dict]]) -> None:
    """Send (group, message) pairs in the order given (one recipient's in id
    order), through the layer's group_send_many (realtime/layers.py): a few
    Redis round trips per chunk instead of four per group."""
    if not messages:
        return
    layer = get_channel_layer()

    async def send() -> None:
        for start in range(0, len(messages), SEND_BATCH):
            await layer.group_send_many(messages[start : start + SEND_BATCH])

    loop.run(send())
