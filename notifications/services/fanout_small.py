"""Fan-out of many small events at once.

Most events name a few recipients explicitly. Fanned out one by one, each
costs a transaction of five statements, so a burst of them is slow to drain
behind a producer that sends thousands per second. The publisher hands the
fan-out of many just-accepted events to one task; this module writes the
first (and only) page of all those whose recipients are explicit ids, in one
transaction with a constant number of statements:

1. lock the events (SKIP LOCKED: one held elsewhere is left to the per-event
   path, which waits for it and then finds its page already done),
2. create unknown recipients of all of them at once,
3. render each event's in-app content (once per event, or per recipient when
   its templates need it),
4. one page statement per group of events sharing type, channels and
   priority class (the same statement and rules as any page),
5. mark them done with their recipient counts.

Events with topics, digest types or fan-out already under way are returned to
the caller for the per-event path (`fanout.event_fan_out_page`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from notifications.models import EventStatus
from notifications.services.digests import is_digested
from notifications.services.fanout import (
    InAppRenderer,
    LockedEvent,
    PageWriter,
    enabled_channels,
    recipient_context,
    lock_events,
    recipients_upsert,
)
from notifications.services.limits import LimitedDelivery, deliveries_apply_limits, limited_by_event
from realtime.hints import pairs_created_on_commit

log = logging.getLogger(__name__)


@dataclass
class SmallFanOut:
    done: list[str] = field(default_factory=list)  # fanned out here
    rest: list[str] = field(default_factory=list)  # for the per-event path
    later: list[str] = field(default_factory=list)  # small, but over this call's page budget


def is_small(event: LockedEvent) -> bool:
    spec = event.recipients or {}
    return (
        event.status == EventStatus.ACCEPTED
        and event.page == 0
        and bool(spec.get("ids"))
        and not spec.get("topics")
        and not is_digested(digest=event.digest, priority=event.priority)
    )


def events_fan_out_small(*, event_ids: list[str], now: datetime | None = None) -> SmallFanOut:
    """Fan out every small event among these in one transaction; the others
    (topics, digests, pages under way, rows locked elsewhere) come back in
    `rest`. At most FANOUT_PAGE_SIZE recipients are written: small events
    beyond that come back in `later`. Events already done or cancelled are in
    no list."""
    now = now or timezone.now()
    outcome = SmallFanOut()
    with transaction.atomic():
        locked = lock_events(event_ids, skip_locked=True)  # in id order, against deadlocks
        # Written in the order given (a batch's order), which becomes the inbox order.
        position = {event_id: index for index, event_id in enumerate(event_ids)}
        locked.sort(key=lambda event: position[event.id])
        seen = {event.id for event in locked}
        outcome.rest = [event_id for event_id in event_ids if event_id not in seen]
        small: list[LockedEvent] = []
        budget = settings.CLARION["FANOUT_PAGE_SIZE"]
        for event in locked:
            if is_small(event):
                size = len(event.recipients["ids"])
                if small and size > budget:
                    outcome.later.append(event.id)
                    continue
                small.append(event)
                budget -= size
            elif event.status in (EventStatus.ACCEPTED, EventStatus.PROCESSING):
                outcome.rest.append(event.id)
        if not small:
            return outcome
        profiles = {row[1]: row for row in recipients_upsert([rid for e in small for rid in e.recipients["ids"]])}
        groups: dict[tuple, tuple[PageWriter, list[tuple]]] = {}
        for event in small:
            channels = enabled_channels(event)
            renderer = InAppRenderer(event)
            key = (event.type_id, tuple(channels), event.channels_in_app, event.priority == "critical")
            if key not in groups:
                groups[key] = (PageWriter(event, channels, renderer, now), [])
            rows = groups[key][1]
            for external_id in event.recipients["ids"]:
                profile = profiles[external_id]
                title, body, url = (
                    renderer.render(recipient_context(profile)) if renderer.per_recipient else renderer.shared
                )
                rows.append((profile[0], title, body, url, event.id))

        by_id = {event.id: event for event in small}
        counts = dict.fromkeys(by_id, 0)
        pairs: list[tuple[str, int]] = []
        limited: list[LimitedDelivery] = []
        for writer, rows in groups.values():
            write = writer.events_rendered(rows)
            for recipient_id, event_id in zip(write.notified, write.notified_events or []):
                counts[event_id] += 1
                if writer.event.channels_in_app:
                    pairs.append((event_id, recipient_id))
            limited.extend(write.limited)
        for event_id, rows in limited_by_event(limited).items():
            event = by_id[event_id]
            deliveries_apply_limits(
                event_id=event_id, type_key=event.type_key, throttle=event.throttle, data=event.data or {}, rows=rows
            )
        _record_done(counts)
        if pairs:
            pairs_created_on_commit(pairs)
        outcome.done = list(by_id)
    log.info("small events fanned out: %d events, %d groups", len(outcome.done), len(groups))
    return outcome


def _record_done(counts: dict[str, int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE notifications_event e
            SET fanout_page = 1, fanout_source = 1, fanout_cursor = 0,
                recipient_count = e.recipient_count + v.n, status = %s,
                enqueued_at = now(), relay_attempts = 0, finished_at = now()
            FROM unnest(%s::uuid[], %s::int[]) AS v(id, n)
            WHERE e.id = v.id
            """,
            [EventStatus.DONE, list(counts), list(counts.values())],
        )
