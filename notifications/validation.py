"""Validation of producer event bodies, as plain functions.

A batch holds up to 1,000 events, so this is written for speed (no serializer
per item) and returns every problem at once, keyed by field.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.utils.dateparse import parse_datetime

from common.choices import Channel, Priority
from common.errors import InvalidInput, TooLarge

EXTERNAL_ID_RE = re.compile(r"^[^\s\x00-\x1f]{1,128}$")
TOPIC_KEY_RE = re.compile(r"^[A-Za-z0-9_.:\-/@]{1,255}$")
TYPE_KEY_MAX = 150
TYPE_KEY_RE = re.compile(rf"^[^\s\x00-\x1f\x7f]{{1,{TYPE_KEY_MAX}}}$")
IDEMPOTENCY_KEY_MAX = 255
EVENT_FIELDS = {
    "type",
    "recipients",
    "actor",
    "data",
    "priority",
    "send_at",
    "channels",
    "idempotency_key",
}
PRIORITIES = {p.value for p in Priority}
CHANNELS = {c.value for c in Channel}


@dataclass
class EventInput:
    type_key: str
    explicit: list[str]
    topics: list[str]
    actor: str = ""
    data: dict = field(default_factory=dict)
    priority: str | None = None
    send_at: dt.datetime | None = None
    channels: list[str] | None = None
    idempotency_key: str | None = None
    # `data` as JSON, encoded once: measured against the size limit, then written as is.
    data_json: bytes = b"{}"

    @property
    def recipients_spec(self) -> dict:
        return {"ids": self.explicit, "topics": self.topics}


def validate_external_id(value: object) -> str | None:
    """The problem with a recipient external id, or None when it is valid."""
    if not isinstance(value, str):
        return "must be a string"
    if not EXTERNAL_ID_RE.match(value):
        return "must be 1 to 128 characters without spaces or control characters"
    return None


def validate_topic_key(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not TOPIC_KEY_RE.match(value):
        return "must be 1 to 255 characters of letters, digits and _ . : - / @"
    return None


def validate_type_key(value: object) -> str | None:
    """The problem with a notification type key, or None when it is valid."""
    if not isinstance(value, str):
        return "must be a string"
    if not TYPE_KEY_RE.match(value):
        return f"must be 1 to {TYPE_KEY_MAX} characters without spaces or control characters"
    return None


def parse_event(body: object, *, header_idempotency_key: str | None = None) -> EventInput:
    """Check one event body; raise InvalidInput/TooLarge naming every bad field."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "The event must be a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    errors: dict[str, list[str]] = {}
    limits = settings.CLARION

    unknown = set(body) - EVENT_FIELDS
    for name in sorted(unknown):
        errors.setdefault(name, []).append("Unknown field.")

    type_key = body.get("type")
    if type_key is None:
        errors.setdefault("type", []).append("This field is required.")
    elif not isinstance(type_key, str) or not type_key or len(type_key) > 150:
        errors.setdefault("type", []).append(
            "Must be a notification type key (a non-empty string)."
        )

    explicit: list[str] = []
    topics: list[str] = []
    recipients = body.get("recipients")
    too_many = False
    if recipients is None:
        errors.setdefault("recipients", []).append("This field is required.")
    elif not isinstance(recipients, list) or not recipients:
        errors.setdefault("recipients", []).append(
            'Must be a non-empty list of ids and {"topic": key} objects.'
        )
    else:
        seen: set[str] = set()
        for index, item in enumerate(recipients):
            if isinstance(item, dict):
                key = item.get("topic")
                problem = (
                    validate_topic_key(key) if set(item) == {"topic"} else 'must be {"topic": key}'
                )
                if problem:
                    errors.setdefault(f"recipients[{index}]", []).append(f"Topic {problem}.")
                elif key not in topics:
                    topics.append(key)
            else:
                problem = validate_external_id(item)
                if problem:
                    errors.setdefault(f"recipients[{index}]", []).append(f"Recipient id {problem}.")
                elif item not in seen:
                    seen.add(item)
                    explicit.append(item)
        if len(explicit) > limits["MAX_EXPLICIT_RECIPIENTS"]:
            too_many = True
            errors.setdefault("recipients", []).append(
                f"At most {limits['MAX_EXPLICIT_RECIPIENTS']} explicit recipients per event;"
                " use a topic for more."
            )

    actor = body.get("actor", "")
    if actor is None:
        actor = ""
    if not isinstance(actor, str) or len(actor) > 128:
        errors.setdefault("actor", []).append("Must be a string of at most 128 characters.")

    data = body.get("data", {})
    data_json = b"{}"
    data_too_large = False
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.setdefault("data", []).append("Must be a JSON object.")
    elif data:
        data_json = orjson.dumps(data)
        size = len(data_json)
        if size > limits["MAX_DATA_BYTES"]:
            data_too_large = True
            errors.setdefault("data", []).append(
                f"Must be at most {limits['MAX_DATA_BYTES']} bytes as JSON (got {size})."
            )

    priority = body.get("priority")
    if priority is not None and (not isinstance(priority, str) or priority not in PRIORITIES):
        errors.setdefault("priority", []).append(f"Must be one of {', '.join(sorted(PRIORITIES))}.")

    send_at = None
    raw_send_at = body.get("send_at")
    if raw_send_at is not None:
        try:
            parsed = parse_datetime(raw_send_at) if isinstance(raw_send_at, str) else None
        except ValueError:  # well-formed but impossible, e.g. minute 60
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            errors.setdefault("send_at", []).append(
                "Must be an ISO 8601 date-time with a time zone."
            )
        else:
            send_at = parsed

    channels = body.get("channels")
    if channels is not None:
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(c, str) for c in channels)
        ):
            errors.setdefault("channels", []).append("Must be a non-empty list of channel names.")
            channels = None
        else:
            bad = [c for c in channels if c not in CHANNELS]
            if bad:
                errors.setdefault("channels", []).append(
                    f"Unknown channel(s) {', '.join(bad)}; known: {', '.join(sorted(CHANNELS))}."
                )
            channels = list(dict.fromkeys(channels))

    key = body.get("idempotency_key", header_idempotency_key)
    if key is not None and (not isinstance(key, str) or not key or len(key) > IDEMPOTENCY_KEY_MAX):
        errors.setdefault("idempotency_key", []).append(
            "Must be a non-empty string of at most 255 characters."
        )

    if errors:
        if data_too_large:
            raise TooLarge("The event's data is too large.", errors=errors)
        detail = "Too many explicit recipients." if too_many else "The event has invalid fields."
        raise InvalidInput(detail, errors=errors)
    return EventInput(
        type_key=type_key,
        explicit=explicit,
        topics=topics,
        actor=actor,
        data=data,
        priority=priority,
        send_at=send_at,
        channels=channels,
        idempotency_key=key,
        data_json=data_json,
    )
