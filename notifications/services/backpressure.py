"""Backpressure by priority at the event intake.

When producers send faster than the workers fan out, the backlog of waiting
events would grow without bound. Instead, while the backlog passes a bound
(seconds, settings), new `low` and then `normal` events are refused with 429
and `Retry-After`; `high` and `critical` are always accepted and overtake the
backlog (they have their own queues and lanes).

The backlog a new event of priority P would join is the wait of the oldest
event at P or a more urgent priority (those are fanned out before it): a
`low` event is measured against every lane, a `normal` one against
critical/high/normal, and a backlog of `low` events alone never refuses a
`normal` one. Ages come from `selectors.fanout_backlog_ages`, the same
reading as `clarion_fanout_backlog_seconds` on /metrics.

Cost: the reading is cached per process (`BacklogGauge`) and taken at most
once per `CLARION_BACKPRESSURE_CHECK_SECONDS`, so a request pays a dictionary
lookup; under overload most requests are refusals, and CPU spent refusing is
CPU the workers lose. A reading that fails admits every event (fail open,
logged once): backpressure protects the workers, it must never cost an event
the database could have taken.

An event scheduled for later (`send_at` in the future) adds no fan-out work
now, so it is admitted. A refused event is not stored and its idempotency key
is not claimed: a retry with the same key is a new request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from prometheus_client import Counter

from common.errors import Overloaded
from notifications.selectors import TypeInfo, fanout_backlog_ages, notification_types_by_key
from notifications.services.events import ParsedEvent

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "clarion_intake_backpressure_refusals",
    "Events refused with 429 because the fan-out backlog passed their priority's bound",
    ["priority"],
)

# Setting of each priority that may be refused; the others never are.
BOUND_SETTINGS = {"low": "BACKPRESSURE_LOW_SECONDS", "normal": "BACKPRESSURE_NORMAL_SECONDS"}
# An async check waits at most this long for a reading in flight, then decides
# with the previous one: a slow database delays a refusal, never an answer.
ASYNC_WAIT_SECONDS = 0.05
# A reading older than this (e.g. the database stopped answering) is not used.
MAX_READING_AGE_SECONDS = 5.0

Ages = Mapping[str, float]


def bound_seconds(priority: str) -> float:
    """The backlog bound of a priority in seconds; 0: never refused."""
    setting = BOUND_SETTINGS.get(priority)
    return max(0.0, float(settings.CLARION[setting])) if setting else 0.0


def backlog_seconds(priority: str, ages: Ages) -> float:
    """How long the events a new `priority` event would queue behind have waited:
    the oldest wait among its priority and the more urgent ones."""
    order = settings.PRIORITIES  # most urgent first
    return max((ages.get(p, 0.0) for p in order[: order.index(priority) + 1]), default=0.0)


def admits(priority: str, ages: Ages | None) -> Overloaded | None:
    """None when an event of `priority` may be accepted, else the refusal.
    No reading (`ages` None) admits: fail open."""
    bound = bound_seconds(priority)
    if not bound or ages is None:
        return None
    backlog = backlog_seconds(priority, ages)
    if backlog <= bound:
        return None
    # How far over the bound the backlog is: roughly how long it takes to
    # drain back under it at the rate it is being fanned out.
    retry_after = max(1, math.ceil(backlog - bound))
    return Overloaded(
        priority=priority, backlog_seconds=backlog, bound_seconds=bound, retry_after=retry_after
    )


def may_refuse(events: Sequence[ParsedEvent]) -> bool:
    """Whether backpressure can refuse any of these events (no reading needed
    when none can: `high`/`critical` answers never wait for one)."""
    if not any(bound_seconds(priority) for priority in BOUND_SETTINGS):
        return False
    return any(
        event.item.priority is None or bound_seconds(event.item.priority) for event in events
    )


def type_keys_needed(events: Sequence[ParsedEvent], ages: Ages | None) -> set[str]:
    """The types whose default priority decides an event's answer: none unless
    the backlog passes some bound (the usual case costs no type lookup)."""
    if ages is None or all(admits(priority, ages) is None for priority in BOUND_SETTINGS):
        return set()
    return {event.item.type_key for event in events if event.item.priority is None}


def refusals(
    events: Sequence[ParsedEvent], ages: Ages | None, types: Mapping[str, TypeInfo]
) -> list[Overloaded | None]:
    """Per event, in order: its refusal, or None to accept it. The one decision
    both intakes (the ASGI handler and the DRF views) take. `types` must hold
    the types of `type_keys_needed(events, ages)`; an event of an unknown type
    is admitted here and refused by the write (422)."""
    if ages is None:
        return [None] * len(events)
    now = timezone.now()
    answers: list[Overloaded | None] = []
    for event in events:
        item = event.item
        info = types.get(item.type_key)
        priority = item.priority or (info.priority if info else None)
        scheduled = item.send_at is not None and item.send_at > now
        refusal = None if priority is None or scheduled else admits(priority, ages)
        if refusal is not None:
            REFUSALS.labels(priority).inc()
        answers.append(refusal)
    return answers


class BacklogGauge:
    """The fan-out backlog as this process last read it, read again at most
    once per CLARION_BACKPRESSURE_CHECK_SECONDS.

    Threads (the DRF views) read it inline, one at a time; the others use the
    previous reading meanwhile. The event-loop intake reads it on a thread of
    its own and waits at most ASYNC_WAIT_SECONDS for it.
    """

    def __init__(self) -> None:
        self._ages: dict[str, float] | None = None
        self._read_at = -math.inf  # time.monotonic() of the last reading, failed or not
        self._lock = threading.Lock()
        self._failing = False
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: asyncio.Future | None = None
        self._in_flight_since = 0.0

    def _due(self) -> bool:
        return time.monotonic() - self._read_at >= settings.CLARION["BACKPRESSURE_CHECK_SECONDS"]

    def _current(self) -> dict[str, float] | None:
        if time.monotonic() - self._read_at > MAX_READING_AGE_SECONDS:
            return None
        return self._ages

    def refresh(self) -> None:
        """Read the backlog now; a failure leaves no reading (fail open), logged once."""
        try:
            ages: dict[str, float] | None = fanout_backlog_ages()
        except Exception as error:  # noqa: BLE001 - never refuse events because the check failed
            if not self._failing:
                log.warning(
                    "backpressure: the fan-out backlog cannot be read; admitting every event: %r",
                    error,
                )
            self._failing = True
            ages = None
        else:
            if self._failing:
                log.warning("backpressure: the fan-out backlog can be read again")
            self._failing = False
        self._ages, self._read_at = ages, time.monotonic()

    def ages(self) -> dict[str, float] | None:
        """The current reading, taken here first when it is due (blocking; for threads)."""
        if self._due() and self._lock.acquire(blocking=False):
            try:
                if self._due():
                    self.refresh()
            finally:
                self._lock.release()
        return self._current()

    async def ages_async(self) -> dict[str, float] | None:
        """The current reading for an event loop: a due reading runs on the
        gauge's thread, never on the loop."""
        if self._due():
            now = time.monotonic()
            if self._in_flight is None or self._in_flight.done():
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="clarion-backlog"
                    )
                loop = asyncio.get_running_loop()
                self._in_flight = loop.run_in_executor(self._executor, self._refresh_in_thread)
                self._in_flight_since = now
            # Only the first ASYNC_WAIT_SECONDS of a reading are waited for: a
            # database that hangs costs the requests meanwhile nothing.
            wait = self._in_flight_since + ASYNC_WAIT_SECONDS - now
            if wait > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(self._in_flight), wait)
                except TimeoutError:
                    pass  # decided with the previous reading; this one serves the next requests
        return self._current()

    def _refresh_in_thread(self) -> None:
        # As Django does around a request: drop a connection that broke meanwhile.
        close_old_connections()
        try:
            self.refresh()
        finally:
            close_old_connections()


gauge = BacklogGauge()  # the threads' (DRF views') reading; the ASGI intake has its own


def events_refusals(events: Sequence[ParsedEvent]) -> list[Overloaded | None]:
    """`refusals` for a thread that may block on the database (the DRF views)."""
    if not may_refuse(events):
        return [None] * len(events)
    ages = gauge.ages()
    keys = type_keys_needed(events, ages)
    return refusals(events, ages, notification_types_by_key(keys) if keys else {})
