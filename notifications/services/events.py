"""Accepting producer events: one transaction writes the event rows and their
idempotency keys; fan-out is published only after it commits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import orjson
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.choices import EventStatus
from common.errors import ClarionError, Conflict, InvalidInput, NotFound
from common.ids import uuid7
from common.prepared import prepared_cursor
from notifications.publish import on_commit_fan_out
from notifications.selectors import (
    TypeInfo,
    notification_type_cache_clear,
    notification_types_by_key,
)
from notifications.validation import EventInput, parse_event

ACCEPTED = {"status": "accepted"}


@dataclass(frozen=True)
class ParsedEvent:
    """A validated event body and its idempotency fingerprint ("" without a key)."""

    item: EventInput
    fingerprint: str


@dataclass
class Accepted:
    id: str
    replayed: bool = False

    def as_response(self) -> dict:
        return {"id": self.id, **ACCEPTED}


def request_hash(body: dict) -> str:
    """Fingerprint of an event body for idempotency (key itself excluded)."""
    canonical = {k: v for k, v in body.items() if k != "idempotency_key"}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


# Decides, after validation and before any write, which events to refuse
# (None: accept), e.g. services/backpressure.events_refusals.
Screen = Callable[[list["ParsedEvent"]], list["ClarionError | None"]]


def event_accept(
    *,
    api_key_id: int | None,
    body: object,
    header_idempotency_key: str | None = None,
    screen: Screen | None = None,
) -> Accepted:
    """Accept one event: validate, write it durably, publish its fan-out on commit."""
    result = events_accept_batch(
        api_key_id=api_key_id,
        bodies=[body],
        header_idempotency_key=header_idempotency_key,
        screen=screen,
    )[0]
    if isinstance(result, ClarionError):
        raise result
    return result


def event_parse(body: object, *, header_idempotency_key: str | None = None) -> ParsedEvent:
    """Validate one event body (no database): raises InvalidInput/TooLarge."""
    item = parse_event(body, header_idempotency_key=header_idempotency_key)
    return ParsedEvent(item, request_hash(body) if item.idempotency_key else "")  # type: ignore[arg-type]


BATCH_LIMIT = 1000


def batch_bodies(body: object) -> list[object]:
    """The event bodies of a batch request `{"events": [...]}` (1 to BATCH_LIMIT)."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise InvalidInput(
            'Expected {"events": [...]}.', errors={"events": ["Must be a list of events."]}
        )
    items = body["events"]
    if not items or len(items) > BATCH_LIMIT:
        raise InvalidInput(
            f"A batch holds 1 to {BATCH_LIMIT} events.",
            errors={"events": [f"Must hold 1 to {BATCH_LIMIT} events."]},
        )
    return items


def events_accept_batch(
    *,
    api_key_id: int | None,
    bodies: list[object],
    header_idempotency_key: str | None = None,
    screen: Screen | None = None,
) -> list[Accepted | ClarionError]:
    """Accept events independently: each result is Accepted or the error of that item.

    All valid new events are written in one transaction with a constant number
    of statements, whatever the batch size. Events `screen` refuses are not
    written (and their idempotency keys not claimed).
    """
    results: list[Accepted | ClarionError | None] = [None] * len(bodies)
    valid: list[tuple[int, ParsedEvent]] = []
    for index, body in enumerate(bodies):
        try:
            valid.append((index, event_parse(body, header_idempotency_key=header_idempotency_key)))
        except ClarionError as error:
            results[index] = error
    if screen is not None and valid:
        refused = screen([parsed for _, parsed in valid])
        for (index, _), refusal in zip(valid, refused):
            results[index] = refusal
        valid = [entry for entry, refusal in zip(valid, refused) if refusal is None]
    written = events_accept_parsed(api_key_id=api_key_id, events=[parsed for _, parsed in valid])
    for (index, _), result in zip(valid, written):
        results[index] = result
    return results  # type: ignore[return-value]


def events_accept_parsed(
    *,
    api_key_id: int | None,
    events: list[ParsedEvent],
    before_commit: Callable[[], None] | None = None,
) -> list[Accepted | ClarionError]:
    """Write already-validated events of one producer in one transaction; a
    result per event, in order (an unknown type or key conflict fails only its
    own event). `before_commit`, called just before the write becomes durable,
    may raise to roll it back (the intake's answer deadline)."""
    results: list[Accepted | ClarionError | None] = [None] * len(events)
    parsed = [(index, event.item, event.fingerprint) for index, event in enumerate(events)]
    if not parsed:
        return []
    try:
        _resolve_and_write(
            api_key_id=api_key_id, parsed=parsed, results=results, before_commit=before_commit
        )
    except IntegrityError:
        # A type this process had cached was deleted meanwhile (the event's
        # foreign key failed at commit): look the types up afresh, once.
        notification_type_cache_clear()
        _resolve_and_write(
            api_key_id=api_key_id, parsed=parsed, results=results, before_commit=before_commit
        )
    return results  # type: ignore[return-value]


def _resolve_and_write(
    *, api_key_id: int | None, parsed: list, results: list, before_commit: Callable[[], None] | None
) -> None:
    types = notification_types_by_key({item.type_key for _, item, _ in parsed})
    valid: list[tuple[int, EventInput, str, TypeInfo]] = []
    for index, item, fingerprint in parsed:
        info = types.get(item.type_key)
        if info is None:
            results[index] = InvalidInput(
                f"Unknown notification type {item.type_key!r}.",
                errors={"type": [f"No active notification type {item.type_key!r}."]},
            )
        else:
            valid.append((index, item, fingerprint, info))
    if valid:
        _write_events(
            api_key_id=api_key_id, items=valid, results=results, before_commit=before_commit
        )


def _write_events(
    *, api_key_id: int | None, items: list, results: list, before_commit: Callable[[], None] | None
) -> None:
    now = timezone.now()
    keyed_or_many = len(items) > 1 or any(item.idempotency_key for _, item, _, _ in items)
    # A single event without a key is one INSERT: atomic on its own, so it runs
    # in autocommit (one round trip instead of BEGIN, INSERT, COMMIT) — unless
    # the caller must be able to roll it back until the last moment.
    with transaction.atomic() if keyed_or_many or before_commit else nullcontext():
        # Claim idempotency keys first; a concurrent duplicate waits on the
        # unique index here and then sees the winner's row.
        keyed = [
            (index, item.idempotency_key, fingerprint)
            for index, item, fingerprint, _ in items
            if item.idempotency_key
        ]
        new_ids: dict[int, str] = {index: str(uuid7()) for index, *_ in items}
        blocked = _resolve_keys(
            api_key_id=api_key_id, keyed=keyed, new_ids=new_ids, now=now, results=results
        )

        rows = []
        to_publish = []
        for index, item, _, info in items:
            if index in blocked:
                continue
            event_id = new_ids[index]
            priority = item.priority or info.priority
            scheduled = item.send_at is not None and item.send_at > now
            rows.append(
                EventRow(
                    id=event_id,
                    api_key_id=api_key_id,
                    type_id=info.id,
                    recipients=orjson.dumps(item.recipients_spec).decode(),
                    actor=item.actor,
                    data=item.data_json.decode(),
                    priority=priority,
                    channels=item.channels,
                    send_at=item.send_at,
                    idempotency_key=item.idempotency_key,
                    status=EventStatus.SCHEDULED if scheduled else EventStatus.ACCEPTED,
                )
            )
            results[index] = Accepted(event_id)
            if not scheduled:
                small = bool(item.explicit) and not item.topics
                to_publish.append((event_id, priority, small))
        if rows:
            _insert_events(rows, now)
        on_commit_fan_out(to_publish)
        if before_commit is not None:
            before_commit()


def _resolve_keys(
    *,
    api_key_id: int | None,
    keyed: list[tuple[int, str, str]],
    new_ids: dict[int, str],
    now: datetime,
    results: list,
) -> set[int]:
    """Claim each idempotency key once and answer every request that names it.

    The first request of a key in this write claims it with its new event id.
    Whether that claim won is known only after the INSERT: a concurrent
    transaction may hold the key already. So every request of the key —
    first and in-write duplicates alike — is answered from the key's winner:
    this write's new event, or the stored one. Returns the indexes that make
    no new event.
    """
    if not keyed:
        return set()
    first_by_key: dict[str, tuple[int, str]] = {}
    for index, key, fingerprint in keyed:
        first_by_key.setdefault(key, (index, fingerprint))
    # Sorted, so two writes that share keys take their locks in one order
    # and wait for each other instead of deadlocking.
    claimed = _claim_idempotency_keys(
        api_key_id=api_key_id,
        claims=[
            (key, fingerprint, new_ids[index])
            for key, (index, fingerprint) in sorted(first_by_key.items())
        ],
        now=now,
    )
    lost = [key for key in first_by_key if key not in claimed]
    stored = _existing_keys(api_key_id=api_key_id, keys=lost)
    if len(stored) < len(lost):
        # A key's holder rolled back or expired between our INSERT and SELECT:
        # claim what is free now, once more (rare; the second pass settles it).
        retry = [key for key in lost if key not in stored]
        claimed |= _claim_idempotency_keys(
            api_key_id=api_key_id,
            claims=[(key, first_by_key[key][1], new_ids[first_by_key[key][0]]) for key in retry],
            now=now,
        )
        stored.update(
            _existing_keys(api_key_id=api_key_id, keys=[k for k in retry if k not in claimed])
        )
    blocked: set[int] = set()
    for index, key, fingerprint in keyed:
        if key in claimed:
            first_index, winner_hash = first_by_key[key]
            if index == first_index:
                continue  # this request makes the event
            winner_id = new_ids[first_index]
        else:
            winner_hash, winner_id = stored[key]
        blocked.add(index)
        results[index] = (
            Accepted(str(winner_id), replayed=True)
            if winner_hash == fingerprint
            else _conflict(key)
        )
    return blocked


def _conflict(key: str) -> Conflict:
    return Conflict(
        "This idempotency key was already used with a different request body.",
        errors={"idempotency_key": [f"Key {key!r} was used with a different body."]},
    )


def _claim_idempotency_keys(
    *, api_key_id: int, claims: list[tuple[str, str, str]], now: datetime
) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO notifications_idempotencykey
                (api_key_id, key, request_hash, event_id, created_at)
            SELECT %s, k, h, e, %s FROM unnest(%s::text[], %s::text[], %s::uuid[]) AS t(k, h, e)
            ON CONFLICT (api_key_id, key) DO NOTHING
            RETURNING key
            """,
            [
                api_key_id,
                now,
                [c[0] for c in claims],
                [c[1] for c in claims],
                [c[2] for c in claims],
            ],
        )
        return {key for (key,) in cursor.fetchall()}


def _existing_keys(*, api_key_id: int, keys: list[str]) -> dict[str, tuple[str, str]]:
    if not keys:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT key, request_hash, event_id FROM notifications_idempotencykey"
            " WHERE api_key_id = %s AND key = ANY(%s)",
            [api_key_id, keys],
        )
        return {key: (stored_hash, event_id) for key, stored_hash, event_id in cursor.fetchall()}


class EventRow(NamedTuple):
    """The columns an accepted event is written with; the rest start at their
    defaults (_EVENT_DEFAULTS). Field names are the column names."""

    id: str
    api_key_id: int | None
    type_id: int
    recipients: str  # JSON text
    actor: str
    data: str  # JSON text
    priority: str
    channels: list[str] | None
    send_at: datetime | None
    idempotency_key: str
    status: str


# Columns written as constants, and their values: a new event has not started fan-out.
_EVENT_DEFAULTS = {
    "fanout_page": 0,
    "fanout_source": 0,
    "fanout_cursor": 0,
    "recipient_count": 0,
    "relay_attempts": 0,
}
_EVENT_COLUMNS = ", ".join((*EventRow._fields, "created_at", "enqueued_at", *_EVENT_DEFAULTS))
# The parameters of the one-row INSERT, with the casts server-side binding needs.
_EVENT_CASTS = {"recipients": "::jsonb", "data": "::jsonb"}
_INSERT_ONE = (
    f"INSERT INTO notifications_event ({_EVENT_COLUMNS}) VALUES ("
    + ", ".join(
        f"%s{_EVENT_CASTS.get(name, '')}"
        for name in (*EventRow._fields, "created_at", "enqueued_at")
    )
    + ", "
    + ", ".join(["%s"] * len(_EVENT_DEFAULTS))
    + ")"
)


def _insert_events(rows: list[EventRow], now: datetime) -> None:
    defaults = tuple(_EVENT_DEFAULTS.values())
    with prepared_cursor() as cursor:
        if len(rows) == 1:
            cursor.execute(_INSERT_ONE, [*rows[0], now, now, *defaults])
            return
        with cursor.copy(f"COPY notifications_event ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((*row, now, now, *defaults))


def event_cancel(*, event_id: str) -> None:
    """Cancel an event whose send_at has not come; 409 once fan-out has begun."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_event SET status = 'cancelled', finished_at = now()"
            " WHERE id = %s AND status = 'scheduled' RETURNING id",
            [event_id],
        )
        if cursor.fetchone():
            return
        cursor.execute("SELECT status FROM notifications_event WHERE id = %s", [event_id])
        found = cursor.fetchone()
    if found is None:
        raise NotFound("No such event.")
    (status,) = found
    if status == EventStatus.CANCELLED:
        return
    raise Conflict(
        f"The event is {status}; only a scheduled event whose send_at has not come"
        " can be cancelled.",
        errors={"status": [status]},
    )
