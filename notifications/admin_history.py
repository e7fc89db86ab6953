"""A type's template versions for the admin, each with its diff from the one before."""

from __future__ import annotations

import difflib

from templates_app.models import TemplateVersion


def _lines(fields: object) -> list[str]:
    """A version's fields as text lines: a header per field, then its template."""
    lines: list[str] = []
    for field, source in (fields or {}).items() if isinstance(fields, dict) else ():
        lines.append(f"[{field}]")
        lines.extend(str(source).splitlines() or [""])
    return lines


def template_history(*, type_id: int, current: dict) -> list[dict]:
    """Per channel and locale, newest first: version, when, its unified diff
    from the previous version, and whether it is what the type uses now."""
    groups: dict[tuple[str, str], list[dict]] = {}
    versions = TemplateVersion.objects.filter(type_id=type_id).order_by(
        "channel", "locale", "version"
    )
    previous: dict[tuple[str, str], list[str]] = {}
    for version in versions:
        slot = (version.channel, version.locale)
        lines = _lines(version.fields)
        diff = list(
            difflib.unified_diff(
                previous.get(slot, []),
                lines,
                fromfile=f"v{version.version - 1}" if slot in previous else "(none)",
                tofile=f"v{version.version}",
                lineterm="",
            )
        )
        previous[slot] = lines
        in_use = (current or {}).get(version.channel, {}).get(version.locale) == version.fields
        groups.setdefault(slot, []).append(
            {
                "id": version.id,
                "version": version.version,
                "created_at": version.created_at,
                "in_use": in_use,
                "diff": [
                    {"text": line, "kind": _kind(line)} for line in diff[2:]
                ],  # the ---/+++ header is in the version's title
            }
        )
    return [
        {"channel": channel, "locale": locale, "versions": list(reversed(items))}
        for (channel, locale), items in groups.items()
    ]


def _kind(line: str) -> str:
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "same")
