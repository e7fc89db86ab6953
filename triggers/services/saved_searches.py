"""Saved-search triggers (`/api/v1/recipients/{id}/triggers/{key}`): a
recipient's standing query over items of one kind.

Writing a trigger also writes its anchors (triggers/matching.py), the rows
the sweep finds it by; both in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction

from common.errors import Conflict, InvalidInput, NotFound
from notifications.models import Recipient
from notifications.selectors import notification_types_by_key
from notifications.services.recipients import check_external_id
from notifications.validation import validate_external_id
from triggers.matching import anchor_of, match_problems
from triggers.models import Trigger, TriggerAnchor
from triggers.services.items import validate_kind

TRIGGER_FIELDS = {"kind", "match", "on", "type"}
CHANGES = ("created", "updated")


@dataclass(frozen=True)
class TriggerInput:
    kind: str
    match: dict
    on_created: bool
    on_updated: bool
    type_id: int
    type_key: str


def check_trigger_key(key: str) -> None:
    if problem := validate_external_id(key):
        raise InvalidInput(f"Trigger key {problem}.", errors={"key": [problem]})


def parse_trigger(body: object) -> TriggerInput:
    """A trigger body, checked: 422 naming every bad field."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "The trigger must be a JSON object.",
            errors={"non_field_errors": ["Expected an object."]},
        )
    errors: dict[str, list[str]] = {
        name: ["Unknown field."] for name in sorted(set(body) - TRIGGER_FIELDS)
    }
    kind = body.get("kind")
    if kind is None:
        errors["kind"] = ["This field is required."]
    elif problem := validate_kind(kind):
        errors["kind"] = [problem]
    match = body.get("match")
    if match is None:
        errors["match"] = ["This field is required."]
    else:
        errors.update(match_problems(match))
    on = body.get("on", ["created"])
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not on or not all(c in CHANGES for c in on):
        errors["on"] = ['Must be a non-empty list of "created" and "updated".']
        on = []
    type_key = body.get("type")
    type_info = None
    if type_key is None:
        errors["type"] = ["This field is required."]
    elif not isinstance(type_key, str) or not 1 <= len(type_key) <= 150:
        errors["type"] = ["Must be a notification type key."]
    else:
        type_info = notification_types_by_key({type_key}).get(type_key)
        if type_info is None:
            errors["type"] = [f"No active notification type {type_key!r}."]
    if errors:
        raise InvalidInput("The trigger has invalid fields.", errors=errors)
    return TriggerInput(kind, match, "created" in on, "updated" in on, type_info.id, type_info.key)


@dataclass(frozen=True)
class TriggerRow:
    key: str
    kind: str
    match: dict
    on: list[str]
    type: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, trigger: Trigger, type_key: str) -> TriggerRow:
        on = [c for c, flag in zip(CHANGES, (trigger.on_created, trigger.on_updated)) if flag]
        return cls(
            trigger.key,
            trigger.kind,
            trigger.match,
            on,
            type_key,
            trigger.created_at,
            trigger.updated_at,
        )

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "match": self.match,
            "on": self.on,
            "type": self.type,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def trigger_put(*, external_id: str, key: str, body: object) -> tuple[TriggerRow, bool]:
    """Create or replace a recipient's trigger (the recipient is created on
    the fly, as events create them). Returns (trigger, created)."""
    check_external_id(external_id)
    check_trigger_key(key)
    parsed = parse_trigger(body)
    anchor = anchor_of(parsed.match)
    with transaction.atomic():
        recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
        # The recipient's row lock serialises its trigger writes, so the cap
        # below cannot be passed by writes at once.
        Recipient.objects.select_for_update().filter(id=recipient.id).exists()
        trigger, created = Trigger.objects.update_or_create(
            recipient=recipient,
            key=key,
            defaults={
                "kind": parsed.kind,
                "match": parsed.match,
                "on_created": parsed.on_created,
                "on_updated": parsed.on_updated,
                "type_id": parsed.type_id,
            },
        )
        limit = settings.CLARION["MAX_TRIGGERS_PER_RECIPIENT"]
        if created and Trigger.objects.filter(recipient=recipient).count() > limit:
            transaction.set_rollback(True)
            raise Conflict(
                f"A recipient has at most {limit} triggers.",
                errors={"key": [f"Recipient {external_id!r} already has {limit} triggers."]},
            )
        TriggerAnchor.objects.filter(trigger=trigger).delete()
        TriggerAnchor.objects.bulk_create(
            TriggerAnchor(
                trigger=trigger, kind=parsed.kind, attributes=list(anchor.attributes), key=list(k)
            )
            for k in anchor.keys
        )
    return TriggerRow.of(trigger, parsed.type_key), created


def triggers_list(*, external_id: str) -> list[TriggerRow]:
    check_external_id(external_id)
    recipient = Recipient.objects.filter(external_id=external_id).only("id").first()
    if recipient is None:
        raise NotFound(f"No recipient {external_id!r}.")
    rows = Trigger.objects.filter(recipient=recipient).select_related("type").order_by("key")
    return [TriggerRow.of(t, t.type.key) for t in rows]


def trigger_delete(*, external_id: str, key: str) -> None:
    check_external_id(external_id)
    check_trigger_key(key)
    deleted, _ = Trigger.objects.filter(recipient__external_id=external_id, key=key).delete()
    if not deleted:
        raise NotFound(f"Recipient {external_id!r} has no trigger {key!r}.")
