"""Rendering a notification type's templates for one channel and locale.

data → context → template (per channel, per locale with fallback) → channel
output. Sending is elsewhere (render apart from send).
"""
from __future__ import annotations

import json
from typing import Any

from templates_app.engine import TemplateError, render, text_from_html
from templates_app.locales import pick_locale

# The fields each channel's template may have.
CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "in_app": ("title", "body", "url"),
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body"),
    "web_push": ("title", "body", "url"),
    "webhook": ("payload",),
}
# Fields whose output is markup: variables are HTML-escaped in them.
ESCAPED_FIELDS = {("email", "html"), ("in_app", "title"), ("in_app", "body")}


def build_context(*, data: dict, actor: str, event: dict, recipient: dict | None = None) -> dict[str, Any]:
    """The variables a template sees: the event's data at the top level, plus
    `actor`, `event` and `recipient` (plain data only)."""
    context = dict(data or {})
    context["actor"] = actor or ""
    context["event"] = event
    if recipient is not None:
        context["recipient"] = recipient
    return context


def render_channel(*, templates: dict, channel: str, locale: str, default_locale: str,
                   context: dict[str, Any]) -> dict[str, str]:
    """The rendered fields of `channel`; TemplateError if there is no template
    for it or one of its fields fails."""
    variants = (templates or {}).get(channel) or {}
    variant = pick_locale(variants, locale, default_locale)
    if variant is None:
        if channel == "webhook":
            return {"payload": json.dumps(context, default=str)}
        raise TemplateError(f"The type has no {channel} template.")
    output: dict[str, str] = {}
    for field in CHANNEL_FIELDS[channel]:
        source = variant.get(field)
        if source is None:
            continue
        try:
            output[field] = render(source, context, autoescape=(channel, field) in ESCAPED_FIELDS)
        except TemplateError as exc:
            raise TemplateError(f"{channel}.{field}: {exc}") from exc
    if channel == "email" and output.get("html") and not output.get("text"):
        output["text"] = text_from_html(output["html"])
    return output


def template_problems(templates: dict) -> dict[str, list[str]]:
    """Syntax and shape problems of a type's templates, keyed by field path."""
    from templates_app.engine import check_syntax

    problems: dict[str, list[str]] = {}
    for channel, variants in (templates or {}).items():
        fields = CHANNEL_FIELDS.get(channel)
        if fields is None:
            problems.setdefault(f"templates.{channel}", []).append("Unknown channel.")
            continue
        for locale, variant in variants.items():
            for field, source in variant.items():
                path = f"templates.{channel}.{locale}.{field}"
                if field not in fields:
                    problems.setdefault(path, []).append(f"Unknown field; {channel} has {', '.join(fields)}.")
                elif not isinstance(source, str):
                    problems.setdefault(path, []).append("Must be a template string.")
                elif (problem := check_syntax(source)) is not None:
                    problems.setdefault(path, []).append(problem)
    return problems
