"""Notification types as code: define, retire, load from a file."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from common.choices import Channel, Priority
from common.errors import InvalidInput, NotFound
from notifications.models import NotificationType
from notifications.selectors import notification_type_cache_clear
from notifications.validation import validate_type_key
from templates_app.keys import key_problem
from templates_app.rendering import template_gaps, template_problems
from templates_app.services import template_versions_record

TYPE_FIELDS = {
    "category",
    "priority",
    "channels",
    "required_channels",
    "templates",
    "digest",
    "throttle",
    "escalation",
    "default_locale",
    "sample_data",
}
CHANNELS = {c.value for c in Channel}


def parse_type(key: str, body: object) -> dict:
    errors: dict[str, list[str]] = {}
    key_problem = validate_type_key(key)
    if key_problem:
        errors["key"] = [f"Key {key_problem}."]
    if not isinstance(body, dict):
        raise InvalidInput(
            "Expected a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    for name in sorted(set(body) - TYPE_FIELDS):
        errors[name] = ["Unknown field."]
    fields: dict = {}
    category = body.get("category", "general")
    if not isinstance(category, str) or not category or len(category) > 100:
        errors.setdefault("category", []).append(
            "Must be a non-empty string of at most 100 characters."
        )
    fields["category"] = category
    priority = body.get("priority", Priority.NORMAL.value)
    if not isinstance(priority, str) or priority not in {p.value for p in Priority}:
        errors.setdefault("priority", []).append("Must be critical, high, normal or low.")
    fields["priority"] = priority
    for name, default in (("channels", [Channel.IN_APP.value]), ("required_channels", [])):
        value = body.get(name, default)
        if not isinstance(value, list) or not all(
            isinstance(c, str) and c in CHANNELS for c in value
        ):
            errors.setdefault(name, []).append(
                f"Must be a list of channels from {', '.join(sorted(CHANNELS))}."
            )
            value = []
        fields[name] = list(dict.fromkeys(value))
    if not set(fields["required_channels"]) <= set(fields["channels"]):
        errors.setdefault("required_channels", []).append("Must be a subset of channels.")
    default_locale = body.get("default_locale", "en")
    if not isinstance(default_locale, str) or not default_locale:
        errors.setdefault("default_locale", []).append("Must be a locale tag.")
    fields["default_locale"] = default_locale
    templates = body.get("templates", {})
    if not isinstance(templates, dict) or not all(
        k in CHANNELS
        and isinstance(v, dict)
        and all(isinstance(loc, str) and isinstance(t, dict) for loc, t in v.items())
        for k, v in templates.items()
    ):
        errors.setdefault("templates", []).append("Must map channel → locale → template fields.")
    else:
        # A type is refused when one of its enabled channels could only fail or send nothing.
        gaps = template_gaps(
            templates=templates,
            channels=fields["channels"],
            default_locale=default_locale if isinstance(default_locale, str) else "",
        )
        for found in (template_problems(templates), gaps):
            for path, problems in found.items():
                errors.setdefault(path, []).extend(problems)
    fields["templates"] = templates
    sample = body.get("sample_data", {})
    if not isinstance(sample, dict):
        errors.setdefault("sample_data", []).append(
            "Must be an object (example event data for previews)."
        )
    fields["sample_data"] = sample
    fields["digest"] = _parse_digest(body.get("digest"), errors)
    fields["throttle"] = _parse_throttle(body.get("throttle"), errors)
    fields["escalation"] = _parse_escalation(
        body.get("escalation"), templates, default_locale, errors
    )
    if errors:
        raise InvalidInput("The notification type has invalid fields.", errors=errors)
    return fields


def _parse_digest(value: object, errors: dict) -> dict | None:
    """{"window_seconds": W, "key": "{{ post_id }}", "mode": "lookback"|"fixed", "max_batch": N}."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {
        "window_seconds",
        "key",
        "mode",
        "max_batch",
    }:
        errors.setdefault("digest", []).append(
            'Must be {"window_seconds": W, "key": optional template,'
            ' "mode": "lookback"|"fixed", "max_batch": N}.'
        )
        return None
    for name, required in (("window_seconds", True), ("max_batch", False)):
        number = value.get(name)
        if number is None and not required:
            continue
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            errors.setdefault(f"digest.{name}", []).append("Must be a whole number of at least 1.")
    if value.get("mode", "lookback") not in ("lookback", "fixed"):
        errors.setdefault("digest.mode", []).append("Must be lookback or fixed.")
    _check_key(value, "digest.key", errors)
    return value


ESCALATION_MIN_SECONDS = 60
ESCALATION_MAX_SECONDS = 30 * 86400


def _parse_escalation(
    value: object, templates: object, default_locale: object, errors: dict
) -> dict | None:
    """{"after_seconds": S, "channels": [external channels]}: at least a minute
    (the sweep reads committed notifications by id; a minute is far beyond any
    fan-out transaction), and a template for each channel."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"after_seconds", "channels"}:
        errors.setdefault("escalation", []).append(
            'Must be {"after_seconds": S, "channels": ["email", ...]}.'
        )
        return None
    seconds = value["after_seconds"]
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not ESCALATION_MIN_SECONDS <= seconds <= ESCALATION_MAX_SECONDS
    ):
        errors.setdefault("escalation.after_seconds", []).append(
            f"Must be whole seconds from {ESCALATION_MIN_SECONDS} to {ESCALATION_MAX_SECONDS}."
        )
    channels = value["channels"]
    external = sorted(CHANNELS - {Channel.IN_APP.value})
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c in external for c in channels)
    ):
        errors.setdefault("escalation.channels", []).append(
            f"Must be a non-empty list of channels from {', '.join(external)}."
        )
    elif isinstance(templates, dict) and isinstance(default_locale, str):
        gaps = template_gaps(templates=templates, channels=channels, default_locale=default_locale)
        for path, problems in gaps.items():
            errors.setdefault(path, []).extend(problems)
        value = {"after_seconds": seconds, "channels": list(dict.fromkeys(channels))}
    return value


def _check_key(value: dict, field: str, errors: dict) -> None:
    """A grouping key is a template of the same language as the type's templates."""
    if "key" not in value:
        return
    if not isinstance(value["key"], str):
        errors.setdefault(field, []).append("Must be a template string.")
    elif (problem := key_problem(value["key"])) is not None:
        errors.setdefault(field, []).append(problem)


def _parse_throttle(value: object, errors: dict) -> dict | None:
    """{"limit": N, "window_seconds": W, "key": "{{ post_id }}"}: at most N per
    recipient (and key, when given) per window of W seconds."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"limit", "window_seconds", "key"}:
        errors.setdefault("throttle", []).append(
            'Must be {"limit": N, "window_seconds": W, "key": optional template}.'
        )
        return None
    for name in ("limit", "window_seconds"):
        number = value.get(name)
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            errors.setdefault(f"throttle.{name}", []).append(
                "Must be a whole number of at least 1."
            )
    _check_key(value, "throttle.key", errors)
    return value


def notification_type_put(*, key: str, body: object) -> tuple[NotificationType, bool]:
    fields = parse_type(key, body)
    fields["retired_at"] = None
    with transaction.atomic():
        notification_type, created = NotificationType.objects.update_or_create(
            key=key, defaults=fields
        )
        template_versions_record(type_id=notification_type.id, templates=fields["templates"])
    notification_type_cache_clear()
    return notification_type, created


def notification_type_retire(*, key: str) -> None:
    """Retire a type: new events of it are refused; past ones keep their history."""
    updated = NotificationType.objects.filter(key=key, retired_at__isnull=True).update(
        retired_at=timezone.now()
    )
    notification_type_cache_clear()
    if not updated and not NotificationType.objects.filter(key=key).exists():
        raise NotFound(f"No notification type {key!r}.")


def notification_types_load(*, path: Path) -> list[tuple[str, bool]]:
    """Load a YAML or JSON file mapping key → type body; all or nothing."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        document = yaml.safe_load(text)
    else:
        document = json.loads(text)
    if not isinstance(document, dict):
        raise InvalidInput("The file must map notification type keys to their definitions.")
    results = []
    with transaction.atomic():
        for key, body in document.items():
            try:
                _, created = notification_type_put(key=key, body=body)
            except InvalidInput as error:
                raise InvalidInput(
                    f"{key}: {error.detail}",
                    errors={f"{key}.{k}": v for k, v in error.errors.items()},
                ) from error
            results.append((key, created))
    return results
