"""Reminders (`PUT/DELETE /api/v1/reminders/{key}`): an event of `type` to
`recipients`, once for each offset before `due_at`.

Each offset is a row (`ReminderFire`, unique per reminder and offset) that
the reminder sweep releases when due: it marks the row fired and inserts the
event in one statement, taking due rows with `FOR UPDATE SKIP LOCKED`, so
sweeps running together share the work and none fires a row twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.errors import ClarionError, InvalidInput, NotFound
from notifications.selectors import notification_types_by_key
from notifications.validation import IDEMPOTENCY_KEY_MAX, parse_event
from triggers.models import Reminder, ReminderFire

REMINDER_FIELDS = {"type", "recipients", "due_at", "offsets", "data"}
OFFSET_RE = re.compile(r"^(\d{1,6})([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_OFFSETS = 10
MAX_OFFSET_SECONDS = 366 * 86400
KEY_RE = re.compile(rf"^[^\x00-\x1f\x7f]{{1,{IDEMPOTENCY_KEY_MAX}}}$")


def check_reminder_key(key: str) -> None:
    if not KEY_RE.match(key):
        problem = f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters without control characters"
        raise InvalidInput(f"Reminder key {problem}.", errors={"key": [problem.capitalize()]})


def offset_label(seconds: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % UNIT_SECONDS[unit] == 0:
            return f"{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def parse_offsets(raw: object) -> tuple[list[int], list[str]]:
    """Offsets as seconds before the due time ("24h", "30m", "0s"); problems."""
    if raw is None:
        return [0], []
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_OFFSETS:
        return [], [f'Must be a list of 1 to {MAX_OFFSETS} offsets like "24h" or "30m".']
    seconds: list[int] = []
    for value in raw:
        match = OFFSET_RE.match(value) if isinstance(value, str) else None
        if not match:
            shown = str(value)[:32]
            return [], [
                f'Offsets are a number and a unit (s, m, h, d, w), like "24h"; not {shown!r}.'
            ]
        amount = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
        if amount > MAX_OFFSET_SECONDS:
            return [], ["Offsets are at most 366 days."]
        seconds.append(amount)
    return sorted(set(seconds), reverse=True), []


@dataclass(frozen=True)
class ReminderInput:
    type_id: int
    recipients: dict
    data_json: str
    due_at: datetime
    offsets: list[int]


def parse_reminder(body: object) -> ReminderInput:
    if not isinstance(body, dict):
        raise InvalidInput(
            "The reminder must be a JSON object.",
            errors={"non_field_errors": ["Expected an object."]},
        )
    errors: dict[str, list[str]] = {
        name: ["Unknown field."] for name in sorted(set(body) - REMINDER_FIELDS)
    }
    event_body = {k: body[k] for k in ("type", "recipients", "data") if k in body}
    event = None
    try:
        event = parse_event(event_body)
    except ClarionError as error:
        errors.update(error.errors)
    due_at = None
    raw_due = body.get("due_at")
    if raw_due is None:
        errors["due_at"] = ["This field is required."]
    else:
        try:
            due_at = parse_datetime(raw_due) if isinstance(raw_due, str) else None
        except ValueError:
            due_at = None
        if due_at is None or due_at.tzinfo is None:
            errors["due_at"] = ["Must be an ISO 8601 date-time with a time zone."]
            due_at = None
    offsets, problems = parse_offsets(body.get("offsets"))
    if problems:
        errors["offsets"] = problems
    type_info = None
    if event is not None:
        type_info = notification_types_by_key({event.type_key}).get(event.type_key)
        if type_info is None:
            errors["type"] = [f"No active notification type {event.type_key!r}."]
    if errors:
        raise InvalidInput("The reminder has invalid fields.", errors=errors)
    return ReminderInput(
        type_info.id, event.recipients_spec, event.data_json.decode(), due_at, offsets
    )


@dataclass(frozen=True)
class ReminderRow:
    key: str
    due_at: datetime
    offsets: list[dict]

    def as_json(self) -> dict:
        return {"key": self.key, "due_at": self.due_at, "offsets": self.offsets}


def _row(reminder: Reminder) -> ReminderRow:
    fires = {f.offset_seconds: f for f in ReminderFire.objects.filter(reminder=reminder)}
    offsets = []
    for seconds in reminder.offsets:
        fire = fires.get(seconds)
        status = "skipped" if fire is None else "fired" if fire.fired_at else "pending"
        offsets.append(
            {
                "offset": offset_label(seconds),
                "fire_at": reminder.due_at - timedelta(seconds=seconds),
                "status": status,
                **({"event_id": str(fire.event_id)} if fire and fire.event_id else {}),
            }
        )
    return ReminderRow(reminder.key, reminder.due_at, offsets)


def reminder_put(*, api_key_id: int | None, key: str, body: object) -> tuple[ReminderRow, bool]:
    """Create or replace a reminder. An offset that has fired stays fired; one
    whose time has already passed when it is first set is skipped (a "24h
    before" reminder put an hour before is not sent late). (row, created)."""
    check_reminder_key(key)
    parsed = parse_reminder(body)
    now = timezone.now()
    with transaction.atomic():
        reminder, created = Reminder.objects.select_for_update().update_or_create(
            api_key_id=api_key_id,
            key=key,
            defaults={
                "type_id": parsed.type_id,
                "recipients": parsed.recipients,
                "data": orjson.loads(parsed.data_json),
                "due_at": parsed.due_at,
                "offsets": parsed.offsets,
            },
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM triggers_reminderfire WHERE reminder_id = %s AND fired_at IS NULL",
                [reminder.id],
            )
            cursor.execute(
                """
                INSERT INTO triggers_reminderfire (reminder_id, offset_seconds, fire_at)
                SELECT %(id)s, o, %(due)s - make_interval(secs => o)
                FROM unnest(%(offsets)s::int[]) o
                WHERE %(due)s - make_interval(secs => o) > %(now)s
                ON CONFLICT (reminder_id, offset_seconds) DO NOTHING
                """,
                {"id": reminder.id, "due": parsed.due_at, "offsets": parsed.offsets, "now": now},
            )
    return _row(reminder), created


def reminder_get(*, api_key_id: int | None, key: str) -> ReminderRow:
    check_reminder_key(key)
    reminder = Reminder.objects.filter(api_key_id=api_key_id, key=key).first()
    if reminder is None:
        raise NotFound(f"No reminder {key!r}.")
    return _row(reminder)


def reminder_delete(*, api_key_id: int | None, key: str) -> None:
    """Cancel what has not fired (the reminder and its pending offsets go)."""
    check_reminder_key(key)
    deleted, _ = Reminder.objects.filter(api_key_id=api_key_id, key=key).delete()
    if not deleted:
        raise NotFound(f"No reminder {key!r}.")
