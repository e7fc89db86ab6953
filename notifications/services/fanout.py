"""Set-based, resumable fan-out of an event to its recipients.

An event's recipients are a list of *sources*: its explicit ids (one source,
at most 1,000) and then each of its topics. A page covers up to PAGE_SIZE
recipients taken in source order and, within a topic, in recipient-id order.
Each page runs in one transaction that

1. locks the event row and checks the page number (a duplicate or stale task
   finds a different number and does nothing),
2. inserts the page's notifications and external delivery rows with
   `INSERT … ON CONFLICT DO NOTHING` (so re-running a page changes nothing),
3. records the new position (source, last recipient id) and page number.

The number of statements per page is constant: it does not grow with the
number of recipients in the page.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from notifications.models import EXTERNAL_CHANNELS, Channel, EventStatus
from notifications.sqljson import from_db_json
from realtime.hints import notifications_created_on_commit
from templates_app.locales import pick_locale
from templates_app.simple import render_simple, template_names

log = logging.getLogger(__name__)

MAX_SOURCES_PER_PAGE = 16
IN_APP_FIELDS = ("title", "body", "url")


@dataclass
class PageResult:
    event_id: str
    page: int
    ran: bool
    inserted: int = 0
    done: bool = False
    next_page: int | None = None
    priority: str = "normal"
    recipient_ids: list[int] = field(default_factory=list)


@dataclass
class LockedEvent:
    id: str
    status: str
    page: int
    source: int
    cursor: int
    priority: str
    recipients: dict
    actor: str
    data: dict
    channels: list[str] | None
    type_key: str
    type_channels: list[str]
    templates: dict
    default_locale: str
    category: str = ""
    required_channels: list[str] = field(default_factory=list)
    channels_in_app: bool = True


def event_fan_out_page(*, event_id: str, page: int) -> PageResult:
    """Run fan-out page `page` of an event; a no-op unless it is the page due."""
    page_size = max(settings.CLARION["FANOUT_PAGE_SIZE"], settings.CLARION["MAX_EXPLICIT_RECIPIENTS"])
    with transaction.atomic():
        event = _lock_event(event_id)
        if event is None or event.status not in (EventStatus.ACCEPTED, EventStatus.PROCESSING):
            return PageResult(event_id, page, ran=False)
        if event.page != page:
            log.info("fan-out page skipped event_id=%s page=%s due=%s", event_id, page, event.page)
            return PageResult(event_id, page, ran=False)

        sources = _sources(event.recipients)
        channels = _enabled_channels(event)
        renderer = InAppRenderer(event)
        source, cursor = event.source, event.cursor
        budget = page_size
        inserted_ids: list[int] = []
        touched_sources = 0
        while source < len(sources) and budget > 0 and touched_sources < MAX_SOURCES_PER_PAGE:
            kind, value = sources[source]
            touched_sources += 1
            if kind == "ids":
                recipient_ids = _insert_for_explicit(event, value, channels, renderer)
                inserted_ids.extend(recipient_ids)
                budget -= len(value)
                source, cursor = source + 1, 0
            else:
                taken, last_id, recipient_ids = _insert_for_topic_page(
                    event, value, cursor, budget, channels, renderer
                )
                inserted_ids.extend(recipient_ids)
                budget -= taken
                if budget > 0:
                    # The topic ran out before the page did: on to the next source.
                    source, cursor = source + 1, 0
                else:
                    cursor = last_id

        done = source >= len(sources)
        _record_progress(event, page, source, cursor, len(inserted_ids), done)
        result = PageResult(
            event_id,
            page,
            ran=True,
            inserted=len(inserted_ids),
            done=done,
            next_page=None if done else page + 1,
            priority=event.priority,
            recipient_ids=inserted_ids,
        )
        if inserted_ids and event.channels_in_app:
            notifications_created_on_commit(event_id=event_id, recipient_ids=inserted_ids)
    return result


def _lock_event(event_id: str) -> LockedEvent | None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT e.id, e.status, e.fanout_page, e.fanout_source, e.fanout_cursor, e.priority,
                   e.recipients, e.actor, e.data, e.channels,
                   t.key, t.channels, t.templates, t.default_locale, t.category, t.required_channels
            FROM notifications_event e JOIN notifications_notificationtype t ON t.id = e.type_id
            WHERE e.id = %s
            FOR UPDATE OF e
            """,
            [event_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    (event_id, status, page, source, cursor_id, priority, recipients, actor, data, channels,
     type_key, type_channels, templates, default_locale, category, required_channels) = row
    return LockedEvent(
        id=str(event_id), status=status, page=page, source=source, cursor=cursor_id, priority=priority,
        recipients=from_db_json(recipients), actor=actor, data=from_db_json(data), channels=channels,
        type_key=type_key, type_channels=type_channels, templates=from_db_json(templates),
        default_locale=default_locale, category=category, required_channels=list(required_channels),
    )


def _sources(spec: dict) -> list[tuple[str, object]]:
    sources: list[tuple[str, object]] = []
    if spec.get("ids"):
        sources.append(("ids", spec["ids"]))
    sources.extend(("topic", key) for key in spec.get("topics", []))
    return sources


def _enabled_channels(event: LockedEvent) -> list[str]:
    wanted = event.type_channels if event.channels is None else [
        c for c in event.type_channels if c in event.channels
    ]
    event.channels_in_app = Channel.IN_APP in wanted
    return [c for c in wanted if c in EXTERNAL_CHANNELS]


class InAppRenderer:
    """Renders the in-app title/body/url once per event, or per recipient when
    the templates read the recipient or come in several locales."""

    def __init__(self, event: LockedEvent):
        self.variants: dict[str, dict] = (event.templates or {}).get(Channel.IN_APP) or {}
        self.default_locale = event.default_locale
        self.base_context = {**(event.data or {}), "actor": event.actor, "event": {"id": event.id, "type": event.type_key}}
        names: set[str] = set()
        for variant in self.variants.values():
            for name in IN_APP_FIELDS:
                names |= template_names(variant.get(name, ""))
        self.per_recipient = "recipient" in names or len(self.variants) > 1
        self.fallback_title = event.type_key
        self.shared = None if self.per_recipient else self.render(None)

    def render(self, recipient: dict | None) -> tuple[str, str, str]:
        locale = (recipient or {}).get("locale", "")
        variant = pick_locale(self.variants, locale, self.default_locale) or {}
        context = self.base_context if recipient is None else {**self.base_context, "recipient": recipient}
        title = render_simple(variant.get("title", ""), context) or self.fallback_title
        return title, render_simple(variant.get("body", ""), context), render_simple(variant.get("url", ""), context)


def _preference_lateral(recipient: str, channel: str, alias: str) -> str:
    """The recipient's most specific on/off for a channel (type, then category,
    then global), as `alias.enabled`; NULL when no row decides: see
    docs/preferences.md. One index probe per row, no query per recipient."""
    return f"""
    LEFT JOIN LATERAL (
        SELECT p.enabled FROM preferences_channelpreference p
        WHERE p.recipient_id = {recipient} AND p.channel = {channel}
          AND ((p.scope = 'type' AND p.key = %(type_key)s)
            OR (p.scope = 'category' AND p.key = %(category)s)
            OR (p.scope = 'global' AND p.key = ''))
        ORDER BY CASE p.scope WHEN 'type' THEN 0 WHEN 'category' THEN 1 ELSE 2 END
        LIMIT 1
    ) {alias} ON TRUE"""


# In-app is visible unless the recipient turned it off (and it is not required).
_VISIBLE = "%(visible)s AND (%(in_app_required)s OR coalesce(in_app_pref.enabled, TRUE))"

# Inserts the page's notifications (skipping any that exist) and a delivery row
# per external channel for each new one — `skipped` with reason `preference`
# where the recipient turned that channel off; returns the recipients notified.
_INSERT_TAIL = f"""
    ON CONFLICT (event_id, recipient_id) DO NOTHING
    RETURNING id, recipient_id
), deliveries AS (
    INSERT INTO notifications_delivery
        (notification_id, channel, status, reason, address, attempts, created_at, updated_at)
    SELECT ins.id, ch,
           CASE WHEN pref.enabled IS FALSE AND NOT ch = ANY(%(required)s::text[]) THEN 'skipped' ELSE 'queued' END,
           CASE WHEN pref.enabled IS FALSE AND NOT ch = ANY(%(required)s::text[]) THEN 'preference' ELSE '' END,
           '', 0, now(), now()
    FROM ins CROSS JOIN unnest(%(channels)s::text[]) AS ch
    {_preference_lateral("ins.recipient_id", "ch", "pref")}
    ON CONFLICT (notification_id, channel) DO NOTHING
)
"""


def _insert_shared(event: LockedEvent, renderer: InAppRenderer, page_sql: str, params: dict) -> str:
    return f"""
        WITH page AS ({page_sql}),
        ins AS (
            INSERT INTO notifications_notification
                (event_id, recipient_id, title, body, url, visible, created_at)
            SELECT %(event_id)s, page.recipient_id, %(title)s, %(body)s, %(url)s, {_VISIBLE}, now()
            FROM page
            {_preference_lateral("page.recipient_id", "'in_app'", "in_app_pref")}
        {_INSERT_TAIL}
        SELECT (SELECT count(*) FROM page), (SELECT max(recipient_id) FROM page),
               coalesce((SELECT array_agg(recipient_id) FROM ins), '{{}}')
    """


_INSERT_RENDERED = f"""
    WITH ins AS (
        INSERT INTO notifications_notification
            (event_id, recipient_id, title, body, url, visible, created_at)
        SELECT %(event_id)s, r, t, b, u, {_VISIBLE}, now()
        FROM unnest(%(rids)s::bigint[], %(titles)s::text[], %(bodies)s::text[], %(urls)s::text[])
             AS x(r, t, b, u)
        {_preference_lateral("x.r", "'in_app'", "in_app_pref")}
        ORDER BY r
    {_INSERT_TAIL}
    SELECT coalesce((SELECT array_agg(recipient_id) FROM ins), '{{}}')
"""

_RECIPIENT_FIELDS = "r.id, r.external_id, r.email, r.phone, r.locale, r.timezone, r.data"


def _recipient_context(row: tuple) -> dict:
    return {
        "id": row[1],
        "external_id": row[1],
        "email": row[2],
        "phone": row[3],
        "locale": row[4],
        "timezone": row[5],
        "data": from_db_json(row[6]) or {},
    }


def _insert_rendered(event: LockedEvent, renderer: InAppRenderer, rows: list[tuple], channels: list[str]) -> list[int]:
    rendered = [renderer.render(_recipient_context(row)) for row in rows]
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_RENDERED,
            {
                **_base_params(event, channels),
                "rids": [row[0] for row in rows],
                "titles": [r[0] for r in rendered],
                "bodies": [r[1] for r in rendered],
                "urls": [r[2] for r in rendered],
            },
        )
        return list(cursor.fetchone()[0])


def _base_params(event: LockedEvent, channels: list[str]) -> dict:
    return {
        "event_id": event.id,
        "visible": event.channels_in_app,
        "channels": channels,
        "required": event.required_channels,
        "in_app_required": Channel.IN_APP in event.required_channels,
        "type_key": event.type_key,
        "category": event.category,
    }


def _shared_params(event: LockedEvent, renderer: InAppRenderer, channels: list[str]) -> dict:
    title, body, url = renderer.shared
    return {**_base_params(event, channels), "title": title, "body": body, "url": url}


def _insert_for_explicit(event: LockedEvent, external_ids: list[str], channels: list[str], renderer: InAppRenderer) -> list[int]:
    """Create unknown recipients on the fly, then notify all of them."""
    ids = sorted(external_ids)  # a fixed order keeps concurrent upserts from deadlocking
    upsert = """
        WITH wanted AS (SELECT unnest(%(ids)s::text[]) AS external_id),
        created AS (
            INSERT INTO notifications_recipient
                (external_id, email, phone, locale, timezone, data, created_at, updated_at)
            SELECT external_id, '', '', '', '', '{}', now(), now() FROM wanted
            ON CONFLICT (external_id) DO NOTHING
            RETURNING id, external_id, email, phone, locale, timezone, data
        )
        SELECT * FROM created
        UNION ALL
        SELECT """ + _RECIPIENT_FIELDS + """ FROM notifications_recipient r JOIN wanted USING (external_id)
    """
    with connection.cursor() as cursor:
        cursor.execute(upsert, {"ids": ids})
        rows = cursor.fetchall()
    if renderer.per_recipient:
        return _insert_rendered(event, renderer, rows, channels)
    params = _shared_params(event, renderer, channels)
    params["rids"] = [row[0] for row in rows]
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_shared(event, renderer, "SELECT unnest(%(rids)s::bigint[]) AS recipient_id", params),
            params,
        )
        return list(cursor.fetchone()[2])


_TOPIC_PAGE = """
    SELECT s.recipient_id FROM notifications_subscription s
    WHERE s.topic_id = (SELECT id FROM notifications_topic WHERE key = %(topic)s)
      AND s.recipient_id > %(cursor)s
    ORDER BY s.recipient_id
    LIMIT %(limit)s
"""


def _insert_for_topic_page(
    event: LockedEvent, topic: str, cursor_id: int, limit: int, channels: list[str], renderer: InAppRenderer
) -> tuple[int, int | None, list[int]]:
    """Notify the next `limit` subscribers of a topic after `cursor_id`.

    Returns (subscribers taken, last recipient id taken, recipients newly notified).
    """
    if renderer.per_recipient:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {_RECIPIENT_FIELDS} FROM ({_TOPIC_PAGE}) page"
                " JOIN notifications_recipient r ON r.id = page.recipient_id ORDER BY r.id",
                {"topic": topic, "cursor": cursor_id, "limit": limit},
            )
            rows = cursor.fetchall()
        if not rows:
            return 0, None, []
        return len(rows), rows[-1][0], _insert_rendered(event, renderer, rows, channels)
    params = _shared_params(event, renderer, channels)
    params.update(topic=topic, cursor=cursor_id, limit=limit)
    with connection.cursor() as cursor:
        cursor.execute(_insert_shared(event, renderer, _TOPIC_PAGE, params), params)
        taken, last_id, recipient_ids = cursor.fetchone()
    return taken, last_id, list(recipient_ids)


def _record_progress(event: LockedEvent, page: int, source: int, cursor_id: int, inserted: int, done: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE notifications_event
            SET fanout_page = %s, fanout_source = %s, fanout_cursor = %s,
                recipient_count = recipient_count + %s, status = %s,
                enqueued_at = now(), relay_attempts = 0,
                finished_at = CASE WHEN %s THEN now() ELSE NULL END
            WHERE id = %s
            """,
            [
                page + 1,
                source,
                cursor_id,
                inserted,
                EventStatus.DONE if done else EventStatus.PROCESSING,
                done,
                event.id,
            ],
        )
