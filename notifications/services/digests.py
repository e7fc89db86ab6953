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
from datetime import datetime, timedelta, timezone as dt_timezone

from django.db import connection, transaction
from django.utils import timezone

from notifications.models import Channel, Priority
from notifications.services import fanout_sql
from delivery.services.content import deliveries_store_content
from notifications.services.limits import deliveries_apply_limits, limited_by_event
from notifications.sqljson import from_db_json
from realtime.hints import digests_created_on_commit
from templates_app.engine import TemplateError, render
from templates_app.rendering import build_context, render_channel

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 100
ITEMS_IN_CONTEXT = 10


def is_digested(*, digest: dict | None, priority: str) -> bool:
    return bool(digest) and priority != Priority.CRITICAL


def digest_key(digest: dict, data: dict, actor: str) -> str:
    source = digest.get("key") or ""
    if not source:
        return ""
    try:
        return render(source, build_context(data=data, actor=actor, event={}))[:255]
    except TemplateError:
        return ""


def window_closes_at(digest: dict, now: datetime) -> datetime:
    seconds = int(digest.get("window_seconds") or 300)
    if digest.get("mode") == "fixed":
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % seconds + seconds, tz=dt_timezone.utc)
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
                SELECT r, %(type_id)s, %(key)s, %(now)s, %(closes_at)s, 'open', 0 FROM unnest(%(ids)s::bigint[]) r
                ON CONFLICT (recipient_id, type_id, key) WHERE status = 'open' DO NOTHING
                """,
                {"type_id": type_id, "key": key, "now": now, "closes_at": window_closes_at(digest, now), "ids": remaining},
            )
            cursor.execute(
                """
                SELECT id, recipient_id FROM notifications_digestwindow
                WHERE recipient_id = ANY(%(ids)s) AND type_id = %(type_id)s AND key = %(key)s AND status = 'open'
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
            SET item_count = w.item_count + 1, first_event_id = coalesce(w.first_event_id, %(event_id)s)
            FROM items WHERE w.id = items.window_id
            RETURNING w.id, w.item_count
            """,
            {"event_id": event.id, "windows": locked},
        )
        full = [window_id for window_id, count in cursor.fetchall()
                if count >= int(digest.get("max_batch") or DEFAULT_MAX_BATCH)]
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
        ids = [row[0] for row in cursor.fetchall()]
        if ids:
            _flush_locked(window_ids=ids, now=now)
    return len(ids)


def _flush_locked(*, window_ids: list[int], now: datetime) -> None:
    """Send windows the caller has locked: one notification each, then mark them flushed."""
    from notifications.services.fanout import LockedEvent, PageWriter

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT w.id, w.type_id, w.first_event_id, w.item_count,
                   r.id, r.external_id, r.email, r.phone, r.locale, r.timezone, r.data
            FROM notifications_digestwindow w JOIN notifications_recipient r ON r.id = w.recipient_id
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
        for window_id, actor, data in cursor.fetchall():
            items.setdefault(window_id, []).append((actor, from_db_json(data) or {}))
        type_ids = sorted({row[1] for row in windows})
        cursor.execute(
            "SELECT id, key, category, channels, required_channels, templates, default_locale"
            " FROM notifications_notificationtype WHERE id = ANY(%s)",
            [type_ids],
        )
        types = {row[0]: row for row in cursor.fetchall()}
    for type_id in type_ids:
        _, key, category, channels, required, templates, default_locale = types[type_id]
        templates = from_db_json(templates) or {}
        group = [row for row in windows if row[1] == type_id and row[2] is not None]
        if not group:
            continue
        anchor = LockedEvent(
            id=str(group[0][2]), status="processing", page=0, source=0, cursor=0, priority=Priority.NORMAL,
            recipients={}, actor="", data={}, channels=None, type_key=key, type_channels=list(channels),
            templates=templates, default_locale=default_locale, category=category,
            required_channels=list(required),
        )
        anchor.channels_in_app = Channel.IN_APP in channels
        external = [c for c in channels if c != Channel.IN_APP]
        writer = PageWriter(anchor, external, _NoRender(), now)
        titles, bodies, urls = [], [], []
        contents: list[tuple[str, int, str, dict | None, str]] = []
        for row in group:
            context, locale = _digest_context(key, row, items.get(row[0], []))
            title, body, url = _render_in_app(templates, default_locale, key, context, locale)
            titles.append(title)
            bodies.append(body)
            urls.append(url)
            # The digest's messages are rendered here, where its items are known.
            for channel in external:
                try:
                    content = render_channel(templates=templates, channel=channel, locale=locale,
                                             default_locale=default_locale, context=context)
                    contents.append((str(row[2]), row[4], channel, content, ""))
                except TemplateError as exc:
                    contents.append((str(row[2]), row[4], channel, None, str(exc)))
        recipient_ids, event_ids = [row[4] for row in group], [str(row[2]) for row in group]
        write = writer._run(
            fanout_sql.DIGEST_PAGE,
            {"rids": recipient_ids, "titles": titles, "bodies": bodies, "urls": urls, "event_ids": event_ids},
        )
        _apply_caps(key, write.limited)
        deliveries_store_content(contents)
        if write.notified and anchor.channels_in_app:
            notified = set(write.notified)
            pairs = [(rid, eid) for rid, eid in zip(recipient_ids, event_ids) if rid in notified]
            digests_created_on_commit(event_ids=[e for _, e in pairs], recipient_ids=[r for r, _ in pairs])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_digestwindow SET status = 'flushed', flushed_at = %s WHERE id = ANY(%s)",
            [now, window_ids],
        )
    log.info("digests sent: %d windows", len(windows))


def _apply_caps(type_key: str, rows: list) -> None:
    """A digest is one message: it counts against the recipient's daily caps
    like any other (under its window's first event, so a re-run counts once)."""
    for event_id, limited in limited_by_event(rows).items():
        deliveries_apply_limits(event_id=event_id, type_key=type_key, throttle=None, data={}, rows=limited)


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


def _digest_context(type_key: str, window: tuple, items: list[tuple[str, dict]]) -> tuple[dict, str]:
    """The template context of a window's digest (its first item's data, the
    recipient, `digest`), and the recipient's locale."""
    from notifications.services.fanout import recipient_context

    first_actor, first_data = items[0] if items else ("", {})
    recipient = recipient_context(window[4:])
    context = build_context(data=first_data, actor=first_actor, event={"id": str(window[2]), "type": type_key},
                            recipient=recipient)
    context["digest"] = digest_context(items, window[3])
    return context, recipient["locale"]


def _render_in_app(templates: dict, default_locale: str, type_key: str, context: dict,
                   locale: str) -> tuple[str, str, str]:
    try:
        out = render_channel(templates=templates, channel=Channel.IN_APP, locale=locale,
                             default_locale=default_locale, context=context)
    except TemplateError as exc:
        log.warning("digest template failed type=%s: %s", type_key, exc)
        out = {}
    return out.get("title") or type_key, out.get("body", ""), out.get("url", "")
