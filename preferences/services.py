"""Reading and replacing a recipient's preferences, as one JSON document:

{"channels": {"sms": false},                       # global, per channel
 "categories": {"social": {"email": false}},       # per category
 "types": {"comment.created": {"email": true}},    # per notification type
 "quiet_hours": {"start": "22:00", "end": "07:00"} | null,
 "daily_caps": {"email": 5}}
"""

from __future__ import annotations

import datetime as dt
import re

from django.db import transaction

from common.choices import Channel
from common.errors import InvalidInput
from preferences.models import ChannelPreference, DeliverySettings, Scope

CHANNELS = {c.value for c in Channel}
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
DOCUMENT_FIELDS = {"channels", "categories", "types", "quiet_hours", "daily_caps"}
MAX_SCOPED_KEYS = 500


def _channel_map(value: object, field: str, errors: dict) -> dict[str, bool]:
    if not isinstance(value, dict):
        errors.setdefault(field, []).append("Must map channel names to true or false.")
        return {}
    out = {}
    for channel, enabled in value.items():
        if channel not in CHANNELS:
            errors.setdefault(f"{field}.{channel}", []).append(
                f"Unknown channel; known: {', '.join(sorted(CHANNELS))}."
            )
        elif not isinstance(enabled, bool):
            errors.setdefault(f"{field}.{channel}", []).append("Must be true or false.")
        else:
            out[channel] = enabled
    return out


def _time(value: object, field: str, errors: dict) -> dt.time | None:
    if not isinstance(value, str) or not TIME_RE.match(value):
        errors.setdefault(field, []).append("Must be a time of day as HH:MM (24-hour).")
        return None
    hour, minute = value.split(":")
    return dt.time(int(hour), int(minute))


def parse_preferences(body: object) -> dict:
    """A validated preferences document; InvalidInput naming every bad field."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "Expected a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    errors: dict[str, list[str]] = {}
    for name in sorted(set(body) - DOCUMENT_FIELDS):
        errors[name] = ["Unknown field."]
    document: dict = {
        "channels": {},
        "categories": {},
        "types": {},
        "quiet_hours": None,
        "daily_caps": {},
    }
    document["channels"] = _channel_map(body.get("channels", {}), "channels", errors)
    for scope in ("categories", "types"):
        value = body.get(scope, {})
        if not isinstance(value, dict) or len(value) > MAX_SCOPED_KEYS:
            errors.setdefault(scope, []).append(
                f"Must map at most {MAX_SCOPED_KEYS} keys to channel maps."
            )
            continue
        for key, channels in value.items():
            if not key or len(key) > 150:
                errors.setdefault(scope, []).append("Keys must be 1 to 150 characters.")
                continue
            document[scope][key] = _channel_map(channels, f"{scope}.{key}", errors)
    quiet = body.get("quiet_hours")
    if quiet is not None:
        if not isinstance(quiet, dict) or set(quiet) != {"start", "end"}:
            errors.setdefault("quiet_hours", []).append(
                'Must be {"start": "HH:MM", "end": "HH:MM"} or null.'
            )
        else:
            start, end = (
                _time(quiet["start"], "quiet_hours.start", errors),
                _time(quiet["end"], "quiet_hours.end", errors),
            )
            if start is not None and end is not None:
                if start == end:
                    errors.setdefault("quiet_hours", []).append("start and end must differ.")
                document["quiet_hours"] = {"start": start, "end": end}
    caps = body.get("daily_caps", {})
    if not isinstance(caps, dict):
        errors.setdefault("daily_caps", []).append("Must map channel names to whole numbers.")
    else:
        for channel, cap in caps.items():
            if channel not in CHANNELS:
                errors.setdefault(f"daily_caps.{channel}", []).append("Unknown channel.")
            elif not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= 100_000:
                errors.setdefault(f"daily_caps.{channel}", []).append(
                    "Must be a whole number from 0 to 100000."
                )
            else:
                document["daily_caps"][channel] = cap
    if errors:
        raise InvalidInput("The preferences have invalid fields.", errors=errors)
    return document


def preferences_get(*, recipient_id: int) -> dict:
    document: dict = {
        "channels": {},
        "categories": {},
        "types": {},
        "quiet_hours": None,
        "daily_caps": {},
    }
    rows = ChannelPreference.objects.filter(recipient_id=recipient_id).values_list(
        "scope", "key", "channel", "enabled"
    )
    for scope, key, channel, enabled in rows:
        if scope == Scope.GLOBAL:
            document["channels"][channel] = enabled
        else:
            bucket = "categories" if scope == Scope.CATEGORY else "types"
            document[bucket].setdefault(key, {})[channel] = enabled
    settings_row = DeliverySettings.objects.filter(recipient_id=recipient_id).first()
    if settings_row:
        if settings_row.quiet_start is not None and settings_row.quiet_end is not None:
            document["quiet_hours"] = {
                "start": settings_row.quiet_start.strftime("%H:%M"),
                "end": settings_row.quiet_end.strftime("%H:%M"),
            }
        document["daily_caps"] = settings_row.daily_caps
    return document


def preferences_put(*, recipient_id: int, body: object) -> dict:
    """Replace the recipient's preferences with the document given."""
    document = parse_preferences(body)
    rows = [
        ChannelPreference(
            recipient_id=recipient_id, scope=Scope.GLOBAL, key="", channel=channel, enabled=enabled
        )
        for channel, enabled in document["channels"].items()
    ]
    for bucket, scope in (("categories", Scope.CATEGORY), ("types", Scope.TYPE)):
        for key, channels in document[bucket].items():
            rows.extend(
                ChannelPreference(
                    recipient_id=recipient_id,
                    scope=scope,
                    key=key,
                    channel=channel,
                    enabled=enabled,
                )
                for channel, enabled in channels.items()
            )
    quiet = document["quiet_hours"]
    with transaction.atomic():
        ChannelPreference.objects.filter(recipient_id=recipient_id).delete()
        ChannelPreference.objects.bulk_create(rows)
        DeliverySettings.objects.update_or_create(
            recipient_id=recipient_id,
            defaults={
                "quiet_start": quiet["start"] if quiet else None,
                "quiet_end": quiet["end"] if quiet else None,
                "daily_caps": document["daily_caps"],
                "timezone": _recipient_timezone(recipient_id),
            },
        )
    return preferences_get(recipient_id=recipient_id)


def _recipient_timezone(recipient_id: int) -> str:
    # The recipient model belongs to the layer above; it is reached through
    # the foreign key that names it, not imported.
    recipients = DeliverySettings._meta.get_field("recipient").related_model._default_manager
    return recipients.filter(id=recipient_id).values_list("timezone", flat=True).first() or ""
