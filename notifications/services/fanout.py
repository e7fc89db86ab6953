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
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.html import escape

from common.channels import CHANNELS
from common.choices import EXTERNAL_CHANNELS, Channel, EventStatus
from common.prepared import prepared_cursor
from common.rows import named_rows
from common.sqljson import from_db_json
from notifications.services import fanout_sql
from notifications.services.digests import _NoRender, digest_context, digests_collect, is_digested
from notifications.services.lanes import event_lane
from notifications.services.limits import LimitedDelivery, deliveries_apply_limits
from notifications.services.page_insert import PageWrite, page_insert, page_params
from notifications.services.profiles import Profile, recipient_context, recipients_upsert
from notifications.services.push import notifications_created_on_commit
from templates_app.engine import TemplateError, referenced_names
from templates_app.rendering import build_context, render_channel

log = logging.getLogger(__name__)

MAX_SOURCES_PER_PAGE = 16
_NO_RENDER = _NoRender()  # digest pages render nothing: the digest is rendered when sent
IN_APP_FIELDS = CHANNELS[Channel.IN_APP].fields


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
    throttle: dict | None = None
    type_id: int | None = None
    digest: dict | None = None
    channels_in_app: bool = True


def event_fan_out_page(*, event_id: str, page: int, now: datetime | None = None) -> PageResult:
    """Run fan-out page `page` of an event; a no-op unless it is the page due.

    `now` (default: the current time) decides quiet hours and local days.
    """
    if page != 0:
        pages_started([event_id], page=page)
        return _fan_out_page(event_id=event_id, page=page, now=now)
    # A first page is written in its priority's lane (services/lanes.py), so
    # each recipient gets the events of one priority in acceptance order.
    with event_lane(event_id):
        pages_started([event_id], page=page)
        return _fan_out_page(event_id=event_id, page=page, now=now)


def pages_started(event_ids: list[str], *, page: int) -> None:
    """Note, outside the page's transaction, that page `page` of these events
    is starting: if the worker dies, the note survives the rollback and the
    relay re-publishes the page within seconds (services/relay.py).

    Committed without waiting for the WAL flush (synchronous_commit off for
    this statement's own transaction): a note that a crash of PostgreSQL
    loses is lost with the page it announced, which rolled back too, and the
    WAL flush cost more than the statement. Inside a caller's transaction
    (tests) the setting would reach that transaction, so it is left alone."""
    no_flush = "" if connection.in_atomic_block else "off"
    with prepared_cursor() as cursor:
        cursor.execute(
            "WITH no_flush AS (SELECT set_config('synchronous_commit', coalesce(nullif(%s, ''),"
            " current_setting('synchronous_commit')), true))"
            " UPDATE notifications_event SET page_started_at = now() FROM no_flush"
            " WHERE id = ANY(%s::uuid[]) AND fanout_page = %s"
            " AND status IN ('accepted', 'processing')",
            [no_flush, event_ids, page],
        )


def _fan_out_page(*, event_id: str, page: int, now: datetime | None) -> PageResult:
    page_size = max(
        settings.CLARION["FANOUT_PAGE_SIZE"], settings.CLARION["MAX_EXPLICIT_RECIPIENTS"]
    )
    with transaction.atomic():
        event = _lock_event(event_id)
        if event is None or event.status not in (EventStatus.ACCEPTED, EventStatus.PROCESSING):
            return PageResult(event_id, page, ran=False)
        if event.page != page:
            log.info("fan-out page skipped event_id=%s page=%s due=%s", event_id, page, event.page)
            return PageResult(event_id, page, ran=False)

        sources = _sources(event.recipients)
        channels = enabled_channels(event)
        renderer = (
            _NO_RENDER
            if is_digested(digest=event.digest, priority=event.priority)
            else InAppRenderer(event)
        )
        writer = PageWriter(event, channels, renderer, now or timezone.now())
        source, cursor = event.source, event.cursor
        budget = page_size
        inserted_ids: list[int] = []
        digested = 0
        limited: list[LimitedDelivery] = []
        touched_sources = 0
        while source < len(sources) and budget > 0 and touched_sources < MAX_SOURCES_PER_PAGE:
            kind, value = sources[source]
            touched_sources += 1
            if kind == "ids":
                write = writer.explicit(value)
                budget -= len(value)
                source, cursor = source + 1, 0
            else:
                write = writer.topic(value, cursor, budget)
                budget -= write.taken
                if budget > 0:
                    # The topic ran out before the page did: on to the next source.
                    source, cursor = source + 1, 0
                else:
                    cursor = write.last_id
            inserted_ids.extend(write.notified)
            limited.extend(write.limited)
            if writer.digesting:
                digested += write.taken

        if limited:
            deliveries_apply_limits(
                event_id=event.id,
                type_key=event.type_key,
                throttle=event.throttle,
                data=event.data or {},
                actor=event.actor,
                rows=limited,
            )
        done = source >= len(sources)
        _record_progress(event, page, source, cursor, len(inserted_ids) + digested, done)
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
    events = lock_events([event_id])
    return events[0] if events else None


def lock_events(event_ids: list[str], *, skip_locked: bool = False) -> list[LockedEvent]:
    """Lock the rows of these events (in id order, so lockers never deadlock)
    and read them with their types; `skip_locked` leaves out rows another
    transaction holds."""
    with prepared_cursor() as cursor:
        named_rows(cursor).execute(
            f"""
            SELECT e.id, e.status, e.fanout_page AS page, e.fanout_source AS source,
                   e.fanout_cursor AS "cursor",
                   e.priority, e.recipients, e.actor, e.data, e.channels,
                   t.key AS type_key, t.channels AS type_channels, t.templates, t.default_locale,
                   t.category,
                   t.required_channels, t.throttle, t.id AS type_id, t.digest
            FROM notifications_event e JOIN notifications_notificationtype t ON t.id = e.type_id
            WHERE e.id = ANY(%s::uuid[])
            ORDER BY e.id
            FOR UPDATE OF e{" SKIP LOCKED" if skip_locked else ""}
            """,
            [event_ids],
        )
        return [_locked_event(row) for row in cursor.fetchall()]


def _locked_event(row) -> LockedEvent:
    """A LockedEvent from a named row of lock_events' query (its columns are the fields)."""
    return LockedEvent(
        id=str(row.id),
        status=row.status,
        page=row.page,
        source=row.source,
        cursor=row.cursor,
        priority=row.priority,
        recipients=from_db_json(row.recipients),
        actor=row.actor,
        data=from_db_json(row.data),
        channels=row.channels,
        type_key=row.type_key,
        type_channels=row.type_channels,
        templates=from_db_json(row.templates),
        default_locale=row.default_locale,
        category=row.category,
        required_channels=list(row.required_channels),
        throttle=from_db_json(row.throttle),
        type_id=row.type_id,
        digest=from_db_json(row.digest),
    )


def _sources(spec: dict) -> list[tuple[str, object]]:
    sources: list[tuple[str, object]] = []
    if spec.get("ids"):
        sources.append(("ids", spec["ids"]))
    sources.extend(("topic", key) for key in spec.get("topics", []))
    return sources


def enabled_channels(event: LockedEvent) -> list[str]:
    """The external channels this event uses (type's, narrowed by the event's);
    sets `event.channels_in_app`."""
    wanted = (
        event.type_channels
        if event.channels is None
        else [c for c in event.type_channels if c in event.channels]
    )
    event.channels_in_app = Channel.IN_APP in wanted
    return [c for c in wanted if c in EXTERNAL_CHANNELS]


class InAppRenderer:
    """Renders the in-app title/body/url once per event, or per recipient when
    the templates read the recipient or come in several locales. A template
    that fails leaves the type's key as the title and the failure in the log:
    the fan-out goes on."""

    def __init__(self, event: LockedEvent):
        self.templates = event.templates or {}
        self.variants: dict[str, dict] = self.templates.get(Channel.IN_APP) or {}
        self.default_locale = event.default_locale
        self.event = event
        self.base_context = build_context(
            data=event.data or {}, actor=event.actor, event={"id": event.id, "type": event.type_key}
        )
        # A digest type's templates read `digest`; an event sent on its own
        # (critical, or a type without digests) is a digest of one.
        self.base_context["digest"] = digest_context([(event.actor, event.data or {})], 1)
        names: set[str] = set()
        for variant in self.variants.values():
            for name in IN_APP_FIELDS:
                names |= referenced_names(variant.get(name, ""))
        self.per_recipient = "recipient" in names or len(self.variants) > 1
        self.fallback_title = escape(event.type_key)
        self.shared = None if self.per_recipient else self.render(None)

    def render(self, recipient: dict | None) -> tuple[str, str, str]:
        if not self.variants:
            return self.fallback_title, "", ""
        context = (
            self.base_context
            if recipient is None
            else {**self.base_context, "recipient": recipient}
        )
        try:
            out = render_channel(
                templates=self.templates,
                channel=Channel.IN_APP,
                locale=(recipient or {}).get("locale", ""),
                default_locale=self.default_locale,
                context=context,
            )
        except TemplateError as exc:
            log.warning(
                "in-app template failed event_id=%s type=%s: %s",
                self.event.id,
                self.event.type_key,
                exc,
            )
            return self.fallback_title, "", ""
        return out.get("title") or self.fallback_title, out.get("body", ""), out.get("url", "")


class PageWriter:
    """Inserts slices of a page through fanout_sql.page_statement, with the
    parameters every slice of this event shares."""

    def __init__(self, event: LockedEvent, channels: list[str], renderer: InAppRenderer, now):
        self.event = event
        self.renderer = renderer
        self.now = now
        # Digest types gather the event into windows instead of notifying now.
        self.digesting = is_digested(digest=event.digest, priority=event.priority)
        self.params = page_params(
            event_id=event.id,
            in_app=event.channels_in_app,
            channels=channels,
            required_channels=event.required_channels,
            type_key=event.type_key,
            category=event.category,
            priority=event.priority,
            throttled=bool(event.throttle),
            now=now,
        )
        if not renderer.per_recipient:
            title, body, url = renderer.shared
            self.params.update(title=title, body=body, url=url)

    def _run(self, page_sql: str, params: dict) -> PageWrite:
        return page_insert(page_sql, self.params, params)

    def events_rendered(self, rows: list[tuple[int, str, str, str, str]]) -> PageWrite:
        """Rows (recipient id, title, body, url, event id) of several events that
        share this writer's type, channels and priority class, in one statement;
        the result names the event of each new notification."""
        columns = list(zip(*rows)) if rows else [[], [], [], [], []]
        return self._run(
            fanout_sql.EVENTS_PAGE,
            {
                "rids": list(columns[0]),
                "titles": list(columns[1]),
                "bodies": list(columns[2]),
                "urls": list(columns[3]),
                "event_ids": list(columns[4]),
                "several_events": True,
            },
        )

    def _collect(self, recipient_ids: list[int]) -> PageWrite:
        """Digest mode: add the event to the recipients' windows; nothing is notified yet."""
        digests_collect(
            event=self.event, type_id=self.event.type_id, recipient_ids=recipient_ids, now=self.now
        )
        return PageWrite(len(recipient_ids), recipient_ids[-1] if recipient_ids else None, [], [])

    def rendered(self, profiles: list[Profile]) -> PageWrite:
        rendered = [self.renderer.render(recipient_context(profile)) for profile in profiles]
        return self._run(
            fanout_sql.RENDERED_PAGE,
            {
                "rids": [profile.id for profile in profiles],
                "titles": [r[0] for r in rendered],
                "bodies": [r[1] for r in rendered],
                "urls": [r[2] for r in rendered],
            },
        )

    def explicit(self, external_ids: list[str]) -> PageWrite:
        """Create unknown recipients on the fly, then notify all of them."""
        profiles = recipients_upsert(external_ids)
        if self.digesting:
            return self._collect([profile.id for profile in profiles])
        if self.renderer.per_recipient:
            return self.rendered(profiles)
        return self._run(fanout_sql.IDS_PAGE, {"rids": [profile.id for profile in profiles]})

    def topic(self, topic: str, cursor_id: int, limit: int) -> PageWrite:
        """The next `limit` subscribers of a topic after `cursor_id`."""
        window = {"topic": topic, "cursor": cursor_id, "limit": limit}
        if self.digesting:
            with connection.cursor() as cursor:
                cursor.execute(fanout_sql.TOPIC_IDS, window)
                ids = [recipient_id for (recipient_id,) in cursor.fetchall()]
            write = self._collect(ids)
            return PageWrite(len(ids), ids[-1] if ids else None, write.notified, [])
        if not self.renderer.per_recipient:
            return self._run(fanout_sql.TOPIC_PAGE, window)
        with connection.cursor() as cursor:
            cursor.execute(fanout_sql.TOPIC_PROFILES, window)
            profiles = [Profile(*row) for row in cursor.fetchall()]
        if not profiles:
            return PageWrite(0, None, [], [])
        write = self.rendered(profiles)
        return PageWrite(len(profiles), profiles[-1].id, write.notified, write.limited)


def _record_progress(
    event: LockedEvent, page: int, source: int, cursor_id: int, inserted: int, done: bool
) -> None:
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
