"""Broadcasts (`PUT/GET/DELETE /api/v1/broadcasts/{key}`): an event sent on
a cron schedule in an IANA zone.

The schedule lives in django-celery-beat's tables — a CrontabSchedule with
the zone, and a PeriodicTask running `clarion.triggers.broadcast_fire` — so
operators see and pause it in the admin like any Beat entry. Each run fires
the slot it belongs to (triggers/cron.py) at most once: the fire row is
unique per (broadcast, slot) and written in the event's transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from common.errors import ClarionError, InvalidInput, NotFound
from common.ids import uuid7
from notifications.selectors import notification_types_by_key
from notifications.services.events import ParsedEvent, event_parse, events_accept_parsed
from triggers.cron import next_slot_after, parse_cron, parse_zone, slot_at_or_before
from triggers.models import Broadcast
from triggers.services.reminders import check_reminder_key

BROADCAST_FIELDS = {"cron", "timezone", "event"}
# An event body of a broadcast: what an event takes, except what makes no
# sense to repeat (a send time, an idempotency key).
EVENT_FORBIDDEN = {"send_at", "idempotency_key"}
TASK = "clarion.triggers.broadcast_fire"
TASK_PREFIX = "broadcast: "


def check_broadcast_key(key: str) -> None:
    check_reminder_key(key)


@dataclass(frozen=True)
class BroadcastInput:
    cron: object
    zone_name: str
    event: dict


def parse_broadcast(body: object) -> BroadcastInput:
    if not isinstance(body, dict):
        raise InvalidInput(
            "The broadcast must be a JSON object.",
            errors={"non_field_errors": ["Expected an object."]},
        )
    errors: dict[str, list[str]] = {
        name: ["Unknown field."] for name in sorted(set(body) - BROADCAST_FIELDS)
    }
    cron, problem = parse_cron(body.get("cron"))
    if problem:
        errors["cron"] = [problem]
    zone, problem = parse_zone(body.get("timezone", "UTC"))
    if problem:
        errors["timezone"] = [problem]
    if cron and zone and next_slot_after(cron, zone, timezone.now()) is None:
        errors["cron"] = ["Never comes round (e.g. February 30th)."]
    event = body.get("event")
    if not isinstance(event, dict):
        errors["event"] = ["Must be an event body (type, recipients, data, ...)."]
    else:
        for name in sorted(EVENT_FORBIDDEN & set(event)):
            errors[f"event.{name}"] = ["A broadcast's event cannot have this field."]
        try:
            parsed = event_parse(event)
        except ClarionError as error:
            errors.update({f"event.{k}": v for k, v in error.errors.items()})
        else:
            if not notification_types_by_key({parsed.item.type_key}):
                errors["event.type"] = [f"No active notification type {parsed.item.type_key!r}."]
    if errors:
        raise InvalidInput("The broadcast has invalid fields.", errors=errors)
    return BroadcastInput(cron, body.get("timezone", "UTC"), event)


@dataclass(frozen=True)
class BroadcastRow:
    key: str
    cron: str
    timezone: str
    event: dict
    enabled: bool
    next_run_at: datetime | None
    last_fired_slot: datetime | None

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "cron": self.cron,
            "timezone": self.timezone,
            "event": self.event,
            "enabled": self.enabled,
            "next_run_at": self.next_run_at,
            "last_fired_slot": self.last_fired_slot,
        }


def _row(broadcast: Broadcast) -> BroadcastRow:
    cron, _ = parse_cron(broadcast.cron)
    zone, _ = parse_zone(broadcast.timezone)
    task = broadcast.periodic_task
    enabled = bool(task and task.enabled)
    upcoming = next_slot_after(cron, zone, timezone.now()) if cron and zone and enabled else None
    last = broadcast.broadcastfire_set.order_by("-slot").values_list("slot", flat=True).first()
    return BroadcastRow(
        broadcast.key,
        broadcast.cron,
        broadcast.timezone,
        broadcast.event,
        enabled,
        upcoming,
        last,
    )


def broadcast_put(*, api_key_id: int | None, key: str, body: object) -> tuple[BroadcastRow, bool]:
    """Create or replace a broadcast and its Beat entry. (row, created)."""
    check_broadcast_key(key)
    parsed = parse_broadcast(body)
    cron = parsed.cron
    with transaction.atomic():
        broadcast, created = Broadcast.objects.select_for_update().update_or_create(
            api_key_id=api_key_id,
            key=key,
            defaults={"cron": cron.expression, "timezone": parsed.zone_name, "event": parsed.event},
        )
        schedule, _ = CrontabSchedule.objects.get_or_create(
            minute=cron.minute,
            hour=cron.hour,
            day_of_month=cron.day_of_month,
            month_of_year=cron.month_of_year,
            day_of_week=cron.day_of_week,
            timezone=parsed.zone_name,
        )
        task, _ = PeriodicTask.objects.update_or_create(
            name=f"{TASK_PREFIX}{broadcast.id}",
            defaults={
                "task": TASK,
                "crontab": schedule,
                "interval": None,
                "kwargs": json.dumps({"broadcast_id": broadcast.id}),
                "queue": "normal",
                "description": f"Broadcast {key!r}: {cron.expression} ({parsed.zone_name})",
            },
        )
        if broadcast.periodic_task_id != task.id:
            broadcast.periodic_task = task
            broadcast.save(update_fields=["periodic_task"])
    return _row(broadcast), created


def broadcast_get(*, api_key_id: int | None, key: str) -> BroadcastRow:
    check_broadcast_key(key)
    broadcast = Broadcast.objects.filter(api_key_id=api_key_id, key=key).first()
    if broadcast is None:
        raise NotFound(f"No broadcast {key!r}.")
    return _row(broadcast)


def broadcast_delete(*, api_key_id: int | None, key: str) -> None:
    check_broadcast_key(key)
    with transaction.atomic():
        broadcast = (
            Broadcast.objects.select_for_update().filter(api_key_id=api_key_id, key=key).first()
        )
        if broadcast is None:
            raise NotFound(f"No broadcast {key!r}.")
        if broadcast.periodic_task_id:
            PeriodicTask.objects.filter(id=broadcast.periodic_task_id).delete()
        broadcast.delete()


@dataclass(frozen=True)
class Fired:
    slot: datetime | None
    event_id: str | None  # None: nothing to fire (already fired, gone, or before it existed)


def broadcast_fire(*, broadcast_id: int, now: datetime | None = None) -> Fired:
    """Fire the broadcast's current slot, once whatever the number of calls."""
    now = now or timezone.now()
    broadcast = Broadcast.objects.filter(id=broadcast_id).first()
    if broadcast is None:
        return Fired(None, None)
    cron, _ = parse_cron(broadcast.cron)
    zone, _ = parse_zone(broadcast.timezone)
    slot = slot_at_or_before(cron, zone, now) if cron and zone else None
    # A slot before the schedule was last set is not this schedule's to fire.
    if slot is None or slot < broadcast.updated_at.replace(second=0, microsecond=0):
        return Fired(slot, None)
    event = {
        **broadcast.event,
        "data": {
            **(broadcast.event.get("data") or {}),
            "broadcast": broadcast.key,
            "slot": slot.isoformat(),
        },
    }
    try:
        parsed: ParsedEvent = event_parse(event)
    except ClarionError:
        return Fired(slot, None)  # its type or data no longer passes: nothing to send
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO triggers_broadcastfire (broadcast_id, slot, event_id, fired_at)"
            " VALUES (%s, %s, %s, now()) ON CONFLICT DO NOTHING RETURNING id",
            [broadcast.id, slot, str(uuid7())],
        )
        row = cursor.fetchone()
        if row is None:
            return Fired(slot, None)  # this slot has fired
        [accepted] = events_accept_parsed(api_key_id=broadcast.api_key_id, events=[parsed])
        if isinstance(accepted, ClarionError):
            raise IntegrityError(f"broadcast {broadcast.key}: {accepted.detail}")
        cursor.execute(
            "UPDATE triggers_broadcastfire SET event_id = %s WHERE id = %s", [accepted.id, row[0]]
        )
    return Fired(slot, accepted.id)
