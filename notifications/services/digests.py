"""Digests: a type with `digest` gathers its events per (recipient, type,
digest key) over a window and sends one notification when it closes.

    "digest": {"window_seconds": 300, "key": "{{ post_id }}",
               "mode": "fixed" | "lookback", "max_batch": 50}

- fixed: windows are aligned to the clock (every `window_seconds` since the epoch);
- lookback (default): a window opens with its first event and closes
  `window_seconds` later;
- `max_batch`: a window that reaches it is sent at once.

Exactly one digest per window, whatever the concurrency: at most one window
per (recipient, type, key) is open (a partial unique index); a fan-out page
locks the open windows of its recipients (FOR UPDATE, in id order) before it
adds its event, and the flush locks a window (SKIP LOCKED), sends it and marks
it flushed in the same transaction. A page that finds a window flushed under
it opens a new one; a flush retried after a crash finds the window flushed or
rolled back — never both sent and open. `critical` events are never digested.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from common.choices import Channel, Priority
from common.rows import named_rows
from common.sqljson import from_db_json
from notifications.services import fanout_sql
from notifications.services.delivery_content import RenderedContent, deliveries_store_content
from notifications.services.limits import deliveries_apply_limits, limited_by_event
from notifications.services.page_insert import page_insert, page_params
from notifications.services.profiles import Profile, profile_columns, recipient_context
from notifications.services.push import digests_created_on_commit
from templates_app.engine import TemplateError
from templates_app.keys import key_render
from templates_app.rendering import build_context, render_channel

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 100
ITEMS_IN_CONTEXT = 10


def is_digested(*, digest: dict | None, priority: str) -> bool:
    return bool(digest) and priority != Priority.CRITICAL


def digest_key(digest: dict, data: dict, actor: str) -> str:
    return key_render(digest.get("key") or "", data=data, actor=actor)


def window_closes_at(digest: dict, now: datetime) -> datetime:
    seconds = int(digest.get("window_seconds") or 300)
    if digest.get("mode") == "fixed":
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % seconds + seconds, tz=UTC)
    return now + timedelta(seconds=seconds)


def digests_collect(*, event, type_id: int, recipient_ids: list[int], now: datetime) -> int:
    """Add `event` to each recipient's open window (opening it where needed),
    inside the fan-out page's transaction; windows that reach max_batch are sent."""
    if not recipient_ids:
        return 0
    digest = event.digest
    key = digest_key(digest, event.data or {}, event.actor)
    locked: list[int] = []
    remaining = sorted(set(recipient_ids))
    with connection.cursor() as cursor:
        for _ in range(5):
            cursor.execute(
                """
                INSERT INTO notifications_digestwindow
                    (recipient_id, type_id, key, opened_at, closes_at, status, item_count)
                SELECT r, %(type_id)s, %(key)s, %(now)s, %(closes_at)s, 'open', 0
                FROM unnest(%(ids)s::bigint[]) r
                ON CONFLICT (recipient_id, type_id, key) WHERE status = 'open' DO NOTHING
                """,
                {
                    "type_id": type_id,
                    "key": key,
                    "now": now,
                    "closes_at": window_closes_at(digest, now),
                    "ids": remaining,
                },
            )
            cursor.execute(
                """
                SELECT id, recipient_id FROM notifications_digestwindow
                WHERE recipient_id = ANY(%(ids)s) AND type_id = %(type_id)s AND key = %(key)s
                  AND status = 'open'
                ORDER BY id FOR UPDATE
                """,
                {"ids": remaining, "type_id": type_id, "key": key},
            )
            rows = cursor.fetchall()
            locked.extend(window_id for window_id, _ in rows)
            found = {recipient_id for _, recipient_id in rows}
            # A window flushed between the insert and the lock: open a new one.
            remaining = [rid for rid in remaining if rid not in found]
            if not remaining:
                break
        else:
            raise RuntimeError(f"could not open digest windows for {len(remaining)} recipients")
        cursor.execute(
            """
            WITH items AS (
                INSERT INTO notifications_digestitem (window_id, event_id, created_at)
                SELECT w, %(event_id)s, now() FROM unnest(%(windows)s::bigint[]) w
                ON CONFLICT (window_id, event_id) DO NOTHING
                RETURNING window_id
            )
            UPDATE notifications_digestwindow w
            SET item_count = w.item_count + 1,
                first_event_id = coalesce(w.first_event_id, %(event_id)s)
            FROM items WHERE w.id = items.window_id
            RETURNING w.id, w.item_count
            """,
            {"event_id": event.id, "windows": locked},
        )
        full = [
            window_id
            for window_id, count in cursor.fetchall()
            if count >= int(digest.get("max_batch") or DEFAULT_MAX_BATCH)
        ]
    if full:
        _flush_locked(window_ids=full, now=now)
    return len(locked)


def digests_flush_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Send the open windows whose time has come; returns how many were sent."""
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT id FROM notifications_digestwindow
            WHERE status = 'open' AND closes_at <= %s
            ORDER BY closes_at LIMIT %s
            FOR UPDATE SKIP LOCKED
            """,
            [now, limit],
        )
        ids = [window_id for (window_id,) in cursor.fetchall()]
        if ids:
            _flush_locked(window_ids=ids, now=now)
    return len(ids)


def _flush_locked(*, window_ids: list[int], now: datetime) -> None:
    """Send windows the caller has locked: one notification each, then mark them flushed."""
    with connection.cursor() as cursor:
        named_rows(cursor).execute(
            f"""
            SELECT w.id, w.type_id, w.first_event_id, w.item_count,
                   {profile_columns("r", prefix="recipient_")}
            FROM notifications_digestwindow w
            JOIN notifications_recipient r ON r.id = w.recipient_id
            WHERE w.id = ANY(%s) AND w.status = 'open'
            ORDER BY w.id
            """,
            [window_ids],
        )
        windows = cursor.fetchall()
        cursor.execute(
            """
            SELECT i.window_id, e.actor, e.data
            FROM notifications_digestitem i JOIN notifications_event e ON e.id = i.event_id
            WHERE i.window_id = ANY(%s) ORDER BY i.window_id, i.id
            """,
            [window_ids],
        )
        items: dict[int, list[tuple[str, dict]]] = {}
        for item in cursor.fetchall():
            items.setdefault(item.window_id, []).append((item.actor, from_db_json(item.data) or {}))
        type_ids = sorted({window.type_id for window in windows})
        cursor.execute(
            "SELECT id, key, category, channels, required_channels, templates, default_locale"
            " FROM notifications_notificationtype WHERE id = ANY(%s)",
            [type_ids],
        )
        types = {row.id: row for row in cursor.fetchall()}
    for type_id in type_ids:
        kind = types[type_id]
        key, category, channels, default_locale = (
            kind.key,
            kind.category,
            kind.channels,
            kind.default_locale,
        )
        templates = from_db_json(kind.templates) or {}
        group = [
            window
            for window in windows
            if window.type_id == type_id and window.first_event_id is not None
        ]
        if not group:
            continue
        in_app = Channel.IN_APP in channels
        external = [c for c in channels if c != Channel.IN_APP]
        # A digest is sent at normal priority: critical events are never digested.
        shared = page_params(
            event_id=str(group[0].first_event_id),
            in_app=in_app,
            channels=external,
            required_channels=list(kind.required_channels),
            type_key=key,
            category=category,
            priority=Priority.NORMAL,
            throttled=False,
            now=now,
        )
        titles, bodies, urls = [], [], []
        contents: list[RenderedContent] = []
        for window in group:
            context, locale = _digest_context(key, window, items.get(window.id, []))
            title, body, url = _render_in_app(templates, default_locale, key, context, locale)
            titles.append(title)
            bodies.append(body)
            urls.append(url)
            # The digest's messages are rendered here, where its items are known.
            for channel in external:
                try:
                    content = render_channel(
                        templates=templates,
                        channel=channel,
                        locale=locale,
                        default_locale=default_locale,
                        context=context,
                    )
                    contents.append(
                        RenderedContent(
                            str(window.first_event_id), window.recipient_id, channel, content
                        )
                    )
                except TemplateError as exc:
                    contents.append(
                        RenderedContent(
                            str(window.first_event_id), window.recipient_id, channel, None, str(exc)
                        )
                    )
        recipient_ids = [window.recipient_id for window in group]
        event_ids = [str(window.first_event_id) for window in group]
        write = page_insert(
            fanout_sql.DIGEST_PAGE,
            shared,
            {
                "rids": recipient_ids,
                "titles": titles,
                "bodies": bodies,
                "urls": urls,
                "event_ids": event_ids,
            },
        )
        _apply_caps(key, write.limited)
        deliveries_store_content(contents)
        if write.notified and in_app:
            notified = set(write.notified)
            pairs = [(rid, eid) for rid, eid in zip(recipient_ids, event_ids) if rid in notified]
            digests_created_on_commit(
                event_ids=[e for _, e in pairs], recipient_ids=[r for r, _ in pairs]
            )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_digestwindow SET status = 'flushed', flushed_at = %s"
            " WHERE id = ANY(%s)",
            [now, window_ids],
        )
    log.info("digests sent: %d windows", len(windows))


def _apply_caps(type_key: str, rows: list) -> None:
    """A digest is one message: it counts against the recipient's daily caps
    like any other (under its window's first event, so a re-run counts once)."""
    for event_id, limited in limited_by_event(rows).items():
        deliveries_apply_limits(
            event_id=event_id, type_key=type_key, throttle=None, data={}, rows=limited
        )


class _NoRender:
    """The page writer's renderer slot when nothing is rendered per page: digest
    pages only collect, and digests are rendered per window here."""

    per_recipient = True
    shared = None


def digest_context(items: list[tuple[str, dict]], count: int) -> dict:
    actors = list(dict.fromkeys(actor for actor, _ in items if actor))
    return {
        "count": count,
        "actors": actors,
        "first_actor": actors[0] if actors else "",
        "others": max(0, len(actors) - 1),
        "items": [{"actor": actor, **data} for actor, data in items[:ITEMS_IN_CONTEXT]],
    }


def _digest_context(type_key: str, window, items: list[tuple[str, dict]]) -> tuple[dict, str]:
    """The template context of a window's digest (its first item's data, the
    recipient, `digest`), and the recipient's locale; `window` is a named row
    of _flush_locked's window query."""
    first_actor, first_data = items[0] if items else ("", {})
    recipient = recipient_context(Profile.from_prefixed(window, "recipient_"))
    context = build_context(
        data=first_data,
        actor=first_actor,
        event={"id": str(window.first_event_id), "type": type_key},
        recipient=recipient,
    )
    context["digest"] = digest_context(items, window.item_count)
    return context, recipient["locale"]


def _render_in_app(
    templates: dict, default_locale: str, type_key: str, context: dict, locale: str
) -> tuple[str, str, str]:
    try:
        out = render_channel(
            templates=templates,
            channel=Channel.IN_APP,
            locale=locale,
            default_locale=default_locale,
            context=context,
        )
    except TemplateError as exc:
        log.warning("digest template failed type=%s: %s", type_key, exc)
        out = {}
    return out.get("title") or type_key, out.get("body", ""), out.get("url", "")
