"""`{{ name }}` / `{{ a.b }}` substitution for in-app titles, bodies and urls.

Only looks values up in plain data (dicts); nothing is called or evaluated, so
a template cannot reach anything but the context it is given.
"""
from __future__ import annotations

import re
from typing import Any

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}")


def template_names(template: str) -> set[str]:
    """The top-level names a template reads (`recipient` for `{{ recipient.email }}`)."""
    return {match.group(1).split(".", 1)[0] for match in PLACEHOLDER_RE.finditer(template or "")}


def lookup(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return ""
    return value


def render_simple(template: str, context: dict[str, Any]) -> str:
    if not template or "{{" not in template:
        return template or ""

    def substitute(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        if value is None:
            return ""
        return value if isinstance(value, str) else str(value)

    return PLACEHOLDER_RE.sub(substitute, template)
