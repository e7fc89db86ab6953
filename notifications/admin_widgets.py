"""Widgets of the notification type editor in the admin.

Each turns a JSON column into inputs a person fills in (templates per channel ×
locale, the digest/throttle/escalation rules) and back into the JSON body that
`parse_type` checks, so the rules stay in one place. A POST without the
widget's marker input (a script, an older form) may still send the column as
JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django import forms

from common.channels import CHANNELS
from common.choices import EXTERNAL_CHANNELS
from templates_app.engine import referenced_names
from templates_app.preview import template_names_missing

SEPARATOR = "__"


def _json_or_text(raw: object) -> object:
    """Posted JSON text as data; text that is not JSON is kept, for the field to refuse."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def template_names_used(templates: object) -> dict[str, list[str]]:
    """Per template ("email.en"), the top-level variables it reads."""
    used: dict[str, list[str]] = {}
    for channel, variants in templates.items() if isinstance(templates, dict) else ():
        for locale, variant in variants.items() if isinstance(variants, dict) else ():
            sources = variant.values() if isinstance(variant, dict) else ()
            names = set().union(*(referenced_names(s) for s in sources if isinstance(s, str)))
            used[f"{channel}.{locale}"] = sorted(names)
    return used


class TemplateGridWidget(forms.Widget):
    """Every channel's templates as one text box per field and locale, with
    room for the live preview beside each locale (filled by type_editor.js).

    Posts `templates__<channel>__<locale>__<field>`; a locale whose fields are
    all empty is left out. The JSON that will be saved is shown read-only."""

    template_name = "admin/notifications/widgets/template_grid.html"

    def __init__(self, attrs=None):
        super().__init__(attrs)
        # Set by the form: per-path problems from parse_type, and the type's
        # sample data and default locale (for the variables it lacks).
        self.path_errors: dict[str, list[str]] = {}
        self.sample_data: dict = {}
        self.default_locale = "en"

    def value_from_datadict(self, data, files, name):
        if f"{name}{SEPARATOR}grid" not in data:
            return _json_or_text(data.get(name))
        templates: dict[str, dict[str, dict[str, str]]] = {}
        prefix = f"{name}{SEPARATOR}"
        for key in data:
            if not key.startswith(prefix) or key.count(SEPARATOR) < 3:
                continue
            # The channel and field names hold no separator; a locale tag might.
            channel, rest = key[len(prefix) :].split(SEPARATOR, 1)
            locale, field = rest.rsplit(SEPARATOR, 1)
            value = data.get(key)
            if channel in CHANNELS and locale and isinstance(value, str) and value.strip():
                templates.setdefault(channel, {}).setdefault(locale, {})[field] = value
        # Fields in the channel's own order, as the JSON column has them.
        return {
            channel: {
                locale: {
                    f: fields[f]
                    for f in (*CHANNELS[channel].fields, *sorted(fields))
                    if f in fields
                }
                for locale, fields in variants.items()
            }
            for channel, variants in templates.items()
        }

    def value_omitted_from_data(self, data, files, name):
        return name not in data and f"{name}{SEPARATOR}grid" not in data

    def format_value(self, value):
        return value

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        templates = _json_or_text(value)
        if not isinstance(templates, dict):
            templates = {}
        missing = template_names_missing(templates, self.sample_data)
        used = template_names_used(templates)
        channels = []
        for channel, spec in CHANNELS.items():
            variants = templates.get(channel)
            variants = variants if isinstance(variants, dict) else {}
            locales = []
            for locale, fields in variants.items():
                fields = fields if isinstance(fields, dict) else {}
                path = f"templates.{channel}.{locale}"
                locales.append(
                    {
                        "locale": locale,
                        "is_default": locale.lower() == self.default_locale.lower(),
                        "fields": [
                            {
                                "name": f"{name}{SEPARATOR}{channel}{SEPARATOR}{locale}"
                                f"{SEPARATOR}{field}",
                                "field": field,
                                "value": fields.get(field, ""),
                                "errors": self.path_errors.get(f"{path}.{field}", []),
                            }
                            for field in spec.fields
                        ],
                        "errors": self.path_errors.get(path, []),
                        "used": used.get(f"{channel}.{locale}", []),
                        "missing": missing.get(f"{channel}.{locale}", []),
                    }
                )
            channels.append(
                {
                    "channel": channel,
                    "fields": spec.fields,
                    "has_default": spec.default_content is not None,
                    "locales": locales,
                    "errors": self.path_errors.get(f"templates.{channel}", []),
                    "blank_prefix": f"{name}{SEPARATOR}{channel}{SEPARATOR}",
                }
            )
        context["widget"].update(
            channels=channels,
            default_locale=self.default_locale,
            json=json.dumps(templates, indent=2, ensure_ascii=False),
            errors=self.path_errors.get("templates", []),
        )
        return context


@dataclass(frozen=True)
class Part:
    """One input of a rule: a whole number, a text (a grouping key template),
    a choice, or a set of channels."""

    name: str
    label: str
    kind: str = "number"  # number | text | choice | channels
    required: bool = True  # sent as null when left empty, so parse_type names it
    choices: tuple[str, ...] = ()
    help: str = ""


RULES: dict[str, tuple[Part, ...]] = {
    "digest": (
        Part("window_seconds", "Window (seconds)"),
        Part("mode", "Mode", kind="choice", choices=("lookback", "fixed")),
        Part("max_batch", "At most per digest", required=False),
        Part("key", "Group by", kind="text", required=False, help="e.g. {{ post_id }}"),
    ),
    "throttle": (
        Part("limit", "At most"),
        Part("window_seconds", "Per (seconds)"),
        Part("key", "Per key", kind="text", required=False, help="e.g. {{ post_id }}"),
    ),
    "escalation": (
        Part("after_seconds", "Unread after (seconds)"),
        Part("channels", "Also send on", kind="channels", choices=EXTERNAL_CHANNELS),
    ),
}


class RuleWidget(forms.Widget):
    """A digest, throttle or escalation rule as a small form: on/off and its parts.

    Posts `<name>__form`, `<name>__on` and `<name>__<part>`. The parts are
    passed on as typed (numbers as ints when they are whole numbers, else as
    the text), for parse_type to judge."""

    template_name = "admin/notifications/widgets/rule.html"

    def __init__(self, rule: str, attrs=None):
        super().__init__(attrs)
        self.rule = rule
        self.parts = RULES[rule]
        self.path_errors: dict[str, list[str]] = {}

    def value_from_datadict(self, data, files, name):
        if f"{name}{SEPARATOR}form" not in data:
            return _json_or_text(data.get(name))
        if not data.get(f"{name}{SEPARATOR}on"):
            return None
        value: dict = {}
        for part in self.parts:
            key = f"{name}{SEPARATOR}{part.name}"
            if part.kind == "channels":
                value[part.name] = data.getlist(key) if hasattr(data, "getlist") else []
                continue
            raw = (data.get(key) or "").strip()
            if not raw:
                if part.required:
                    value[part.name] = None
                continue
            value[part.name] = (
                int(raw) if part.kind == "number" and (raw.isascii() and raw.isdigit()) else raw
            )
        return value

    def value_omitted_from_data(self, data, files, name):
        return name not in data and f"{name}{SEPARATOR}form" not in data

    def format_value(self, value):
        return value

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        rule = _json_or_text(value)
        rule = rule if isinstance(rule, dict) else None
        parts = []
        for part in self.parts:
            current = (rule or {}).get(part.name)
            parts.append(
                {
                    "part": part,
                    "name": f"{name}{SEPARATOR}{part.name}",
                    "id": f"id_{name}{SEPARATOR}{part.name}",
                    "value": "" if current is None else current,
                    "selected": current if isinstance(current, list) else [],
                    "errors": self.path_errors.get(f"{self.rule}.{part.name}", []),
                }
            )
        context["widget"].update(
            rule=self.rule,
            on=rule is not None,
            parts=parts,
            errors=self.path_errors.get(self.rule, []),
        )
        return context
