"""A recipient's preferences in the admin: a grid of scope × channel, quiet
hours and daily caps, turned into the document preferences_put takes.

Each grid cell has three states, as the rows do (docs/preferences.md): on,
off, or no row ("as the type defines", shown as the inherited value). The
checkbox cycles through them (pref_grid.js); what is posted is the hidden
input beside it: "on", "off" or "".
"""

from __future__ import annotations

from django import forms

from common.choices import Channel
from notifications.models import NotificationType

CHANNELS = tuple(c.value for c in Channel)
PREFERENCE_FIELDS = ("preferences", "pref_quiet_start", "pref_quiet_end", "pref_caps")
STATES = {"on": True, "off": False}


def type_categories() -> list[str]:
    """The categories of the types in use: the rows of the grid."""
    return list(
        NotificationType.objects.filter(retired_at__isnull=True)
        .order_by("category")
        .values_list("category", flat=True)
        .distinct()
    )


class PreferenceGridWidget(forms.Widget):
    """Rows: everything (the global setting), each category, each type the
    recipient has a setting for; columns: channels.

    Posts `pref__<row>__scope`, `pref__<row>__key` and `pref__<row>__<channel>`."""

    template_name = "admin/notifications/widgets/preference_grid.html"

    def __init__(self, attrs=None):
        super().__init__(attrs)
        self.rows: list[tuple[str, str]] = [("global", "")]

    def setup(self, *, document: dict, categories: list[str]) -> None:
        keys = dict.fromkeys([*categories, *document.get("categories", {})])
        self.rows = [
            ("global", ""),
            *(("category", key) for key in keys),
            *(("type", key) for key in document.get("types", {})),
        ]

    def value_from_datadict(self, data, files, name):
        document: dict = {"channels": {}, "categories": {}, "types": {}}
        row = 0
        while f"{name}__{row}__scope" in data:
            scope, key = data.get(f"{name}__{row}__scope"), data.get(f"{name}__{row}__key", "")
            cells = {
                channel: STATES[data[f"{name}__{row}__{channel}"]]
                for channel in CHANNELS
                if data.get(f"{name}__{row}__{channel}") in STATES
            }
            if scope == "global":
                document["channels"].update(cells)
            elif scope in ("category", "type") and key:
                # A row left all "as inherited" is no row at all.
                bucket = document["categories" if scope == "category" else "types"]
                if cells:
                    bucket.setdefault(key, {}).update(cells)
            row += 1
        return document

    def value_omitted_from_data(self, data, files, name):
        return f"{name}__0__scope" not in data

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        document = value if isinstance(value, dict) else {}
        global_row = document.get("channels") or {}
        rows = []
        for index, (scope, key) in enumerate(self.rows):
            if scope == "global":
                explicit, label = global_row, "All notifications"
            else:
                bucket = document.get("categories" if scope == "category" else "types") or {}
                explicit, label = bucket.get(key) or {}, key
            cells = []
            for channel in CHANNELS:
                state = {True: "on", False: "off"}.get(explicit.get(channel), "")
                # What a cell without a row gets: the global setting, else on.
                inherited = global_row.get(channel, True) if scope != "global" else True
                cells.append(
                    {
                        "channel": channel,
                        "name": f"{name}__{index}__{channel}",
                        "state": state,
                        "inherited": "on" if inherited else "off",
                    }
                )
            rows.append(
                {"index": index, "scope": scope, "key": key, "label": label, "cells": cells}
            )
        context["widget"].update(channels=CHANNELS, rows=rows, prefix=name)
        return context


class PreferenceGridField(forms.Field):
    widget = PreferenceGridWidget

    def __init__(self, **kwargs):
        super().__init__(required=False, label="Channels", **kwargs)

    def has_changed(self, initial, data):
        return (initial or {}) != (data or {})


class DailyCapsWidget(forms.Widget):
    """One number per channel; posts `<name>__<channel>`."""

    template_name = "admin/notifications/widgets/daily_caps.html"

    def value_from_datadict(self, data, files, name):
        caps = {}
        for channel in CHANNELS:
            raw = (data.get(f"{name}__{channel}") or "").strip()
            if raw:
                # Typed as posted: parse_preferences judges what is a valid cap.
                caps[channel] = int(raw) if (raw.isascii() and raw.isdigit()) else raw
        return caps

    def value_omitted_from_data(self, data, files, name):
        return not any(f"{name}__{channel}" in data for channel in CHANNELS)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        caps = value if isinstance(value, dict) else {}
        context["widget"]["caps"] = [
            {"channel": c, "name": f"{name}__{c}", "value": caps.get(c, "")} for c in CHANNELS
        ]
        return context


class DailyCapsField(forms.Field):
    widget = DailyCapsWidget

    def __init__(self, **kwargs):
        super().__init__(
            required=False,
            label="Daily caps",
            help_text="At most this many a day per channel; empty: no cap.",
            **kwargs,
        )

    def has_changed(self, initial, data):
        return (initial or {}) != (data or {})


def preference_initial(document: dict) -> dict:
    quiet = document.get("quiet_hours") or {}
    return {
        "preferences": {key: document.get(key, {}) for key in ("channels", "categories", "types")},
        "pref_quiet_start": quiet.get("start", ""),
        "pref_quiet_end": quiet.get("end", ""),
        "pref_caps": document.get("daily_caps") or {},
    }


def preference_document(cleaned: dict) -> dict:
    """The document the form's fields make, for parse_preferences to check."""
    grid = cleaned.get("preferences") or {}
    start = (cleaned.get("pref_quiet_start") or "").strip()
    end = (cleaned.get("pref_quiet_end") or "").strip()
    return {
        "channels": grid.get("channels", {}),
        "categories": grid.get("categories", {}),
        "types": grid.get("types", {}),
        "quiet_hours": {"start": start, "end": end} if start or end else None,
        "daily_caps": cleaned.get("pref_caps") or {},
    }


def preference_error_field(path: str) -> str:
    """The form field a problem of the preferences document belongs to."""
    if path == "quiet_hours.end":
        return "pref_quiet_end"
    if path.startswith("quiet_hours"):
        return "pref_quiet_start"
    if path.startswith("daily_caps"):
        return "pref_caps"
    return "preferences"
