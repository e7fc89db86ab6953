"""Fan-out of many small events at once.

Most events name a few recipients explicitly. Fanned out one by one, each
costs a transaction of five statements, so a burst of them is slow to drain
behind a producer that sends thousands per second. The publisher hands the
fan-out of many just-accepted events to one task; this module writes the
first (and only) page of all those whose recipients are explicit ids, in one
transaction per priority lane (services/lanes.py) with a constant number of
statements:

1. lock the events, with every other small event of that priority still
   waiting, in acceptance order,
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
from django.db import transaction
from django.utils import timezone

from common.choices import EventStatus
from common.prepared import prepared_cursor
from notifications.services.digests import is_digested
from notifications.services.fanout import (
    InAppRenderer,
    LockedEvent,
    PageWriter,
    enabled_channels,
    lock_events,
    pages_started,
)
from notifications.services.lanes import priority_lane
from notifications.services.limits import LimitedDelivery, deliveries_apply_limits, limited_by_event
from notifications.services.profiles import recipient_context, recipients_upsert
from notifications.services.push import pairs_created_on_commit
from notifications.wakeups import wake_claim, wake_release

log = logging.getLogger(__name__)

# At most this many waiting events are taken along per call (the page budget
# bounds the recipients written).
SWEEP_LIMIT = 1000


@dataclass
class SmallFanOut:
    done: list[str] = field(default_factory=list)  # fanned out here
    rest: list[str] = field(default_factory=list)  # for the per-event path
    later: list[str] = field(default_factory=list)  # small, but over this call's page budget
    sweep_full: bool = False  # the sweep hit its limit: more may be waiting
    sweep_again: bool = False  # small events came in during the sweep; the caller holds the wake-up


def is_small(event: LockedEvent) -> bool:
    spec = event.recipients or {}
    return (
        event.status == EventStatus.ACCEPTED
        and event.page == 0
        and bool(spec.get("ids"))
        and not spec.get("topics")
        and not is_digested(digest=event.digest, priority=event.priority)
    )


def events_fan_out_small(
    *, event_ids: list[str], sweep: str | None = None, now: datetime | None = None
) -> SmallFanOut:
    """Fan out every small event among these, each priority in its lane
    (services/lanes.py); the others (topics, digests, pages under way) come
    back in `rest`. At most FANOUT_PAGE_SIZE recipients are written per lane
    and call: small events beyond that come back in `later`. Events already
    done or cancelled are in no list.

    In its lane, a call writes every small event of that priority still
    waiting, oldest first, its own among them (the others' messages then find
    them done): each recipient gets them in acceptance order, and a backlog
    drains in a few large transactions instead of one lane hold per event.

    `sweep` names a priority whose lane is swept even when none of these
    events waits in it: the message is a wake-up (notifications.wakeups)."""
    now = now or timezone.now()
    outcome = SmallFanOut()
    if sweep:
        # A wake-up names events of its own priority only (publish.publish_grouped):
        # the lane's lock of them tells which are small, without reading them first.
        waiting: dict[str, list[str]] = {sweep: list(event_ids)}
        states: list[tuple[str, str, str, int]] = []
    else:
        waiting = {}
        states = _fan_out_states(event_ids)
    for event_id, priority, status, page in states:
        if status == EventStatus.ACCEPTED and page == 0:
            waiting.setdefault(priority, []).append(event_id)
        elif status in (EventStatus.ACCEPTED, EventStatus.PROCESSING):
            outcome.rest.append(event_id)
    for priority, ids in waiting.items():
        with priority_lane(priority):
            if ids:
                pages_started(ids, page=0)
            if priority != sweep:
                # Before reading what waits: an event committed after this needs
                # (and its publisher will send) a message of its own.
                wake_release(priority)
            _fan_out_in_lane(priority=priority, event_ids=ids, now=now, outcome=outcome)
            if priority == sweep:
                outcome.sweep_again = _wake_up_kept(priority, outcome)
    return outcome


def _wake_up_kept(priority: str, outcome: SmallFanOut) -> bool:
    """End a wake-up's sweep: release its key, then look again.

    The key stays claimed while the sweep writes and pushes, so the events
    committed meanwhile publish nothing (their publishers lose the claim):
    they are for this worker, which after the release reads what waits again
    and, when some small event does and it wins the claim back, sweeps once
    more without a broker round trip, a task start and a lane taken anew by
    another process. An event whose publisher lost the claim committed
    before the release, so the read after it sees that event; a publisher
    that claims after the release sends a message of its own. True when the
    caller must sweep again (it holds the key)."""
    wake_release(priority)
    handled = set(outcome.done) | set(outcome.rest) | set(outcome.later)
    if not any(
        event_id not in handled for event_id in _waiting(priority=priority, limit=len(handled) + 1)
    ):
        return False
    return wake_claim(priority)


def _fan_out_states(event_ids: list[str]) -> list[tuple[str, str, str, int]]:
    with prepared_cursor() as cursor:
        cursor.execute(
            "SELECT id::text, priority, status, fanout_page FROM notifications_event"
            " WHERE id = ANY(%s::uuid[])",
            [event_ids],
        )
        return cursor.fetchall()


def _waiting(*, priority: str, limit: int) -> list[str]:
    """The oldest small events of this priority still waiting for fan-out."""
    with prepared_cursor() as cursor:
        cursor.execute(
            """
            SELECT id FROM notifications_event
            WHERE status = 'accepted' AND priority = %s AND fanout_page = 0
              AND recipients -> 'topics' = '[]'::jsonb
            ORDER BY id LIMIT %s
            """,
            [priority, limit],
        )
        # Selected as uuid: `SELECT id::text ... ORDER BY id` sorts by the text
        # column, so PostgreSQL read every waiting event to sort them instead
        # of walking event_waiting_idx in order and stopping at the limit.
        return [str(event_id) for (event_id,) in cursor.fetchall()]


def _fan_out_in_lane(
    *, priority: str, event_ids: list[str], now: datetime, outcome: SmallFanOut
) -> None:
    own = set(event_ids)
    with transaction.atomic():
        # Everything of this priority waiting now, oldest first: the events
        # accepted before ours keep their place, and under load one lane hold
        # writes the whole backlog (the later events' own tasks find them done).
        waiting = _waiting(priority=priority, limit=SWEEP_LIMIT)
        swept = set(waiting)
        # Locked and written in id order: ids are the order of acceptance (common.ids).
        locked = lock_events(sorted(own.union(waiting)))
        small: list[LockedEvent] = []
        budget = settings.CLARION["FANOUT_PAGE_SIZE"]
        outcome.sweep_full = outcome.sweep_full or len(waiting) >= SWEEP_LIMIT
        for event in locked:
            if not is_small(event):
                # Waiting events that are not small after all (a digest type)
                # may have had no message of their own: the per-event path.
                if event.status in (EventStatus.ACCEPTED, EventStatus.PROCESSING) and (
                    event.id in own or event.id in swept
                ):
                    outcome.rest.append(event.id)
                continue
            size = len(event.recipients["ids"])
            if small and size > budget:
                if event.id in own:
                    outcome.later.append(event.id)
                outcome.sweep_full = True
                continue
            small.append(event)
            budget -= size
        if small:
            _write_small(small, now)
    done = [event.id for event in small]
    outcome.done.extend(done)
    if done:
        log.info(
            "small events fanned out: %d events (%d of other tasks)",
            len(done),
            len(set(done) - own),
        )


def _write_small(small: list[LockedEvent], now: datetime) -> None:
    """Write the first and only page of these small events, in their order."""
    profiles = {
        profile.external_id: profile
        for profile in recipients_upsert([rid for e in small for rid in e.recipients["ids"]])
    }
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
                renderer.render(recipient_context(profile))
                if renderer.per_recipient
                else renderer.shared
            )
            rows.append((profile.id, title, body, url, event.id))

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
            event_id=event_id,
            type_key=event.type_key,
            throttle=event.throttle,
            data=event.data or {},
            actor=event.actor,
            rows=rows,
        )
    _record_done(counts)
    if pairs:
        pairs_created_on_commit(pairs)


def _record_done(counts: dict[str, int]) -> None:
    with prepared_cursor() as cursor:
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
