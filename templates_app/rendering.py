"""Rendering a notification type's templates for one channel and locale.

data → context → template (per channel, per locale with fallback) → channel
output. Sending is elsewhere (render apart from send).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.channels import CHANNELS
from templates_app.engine import TemplateError, check_syntax, render, text_from_html
from templates_app.locales import locale_chain, pick_locale

# Top-level names the render context adds to the event's data (build_context;
# `digest` where digests and in-app items are rendered).
CONTEXT_NAMES = frozenset({"actor", "event", "recipient", "digest"})


def build_context(
    *, data: dict, actor: str, event: dict, recipient: dict | None = None
) -> dict[str, Any]:
    """The variables a template sees: the event's data at the top level, plus
    `actor`, `event` and `recipient` (plain data only)."""
    context = dict(data or {})
    context["actor"] = actor or ""
    context["event"] = event
    if recipient is not None:
        context["recipient"] = recipient
    return context


def render_channel(
    *, templates: dict, channel: str, locale: str, default_locale: str, context: dict[str, Any]
) -> dict[str, str]:
    """The rendered fields of `channel`; TemplateError if there is no template
    for it or one of its fields fails."""
    spec = CHANNELS[channel]
    variants = (templates or {}).get(channel) or {}
    variant = pick_locale(variants, locale, default_locale)
    if variant is None:
        if spec.default_content is not None:
            return spec.default_content(context)
        raise TemplateError(f"The type has no {channel} template.")
    output: dict[str, str] = {}
    for field in spec.fields:
        source = variant.get(field)
        if source is None:
            continue
        try:
            output[field] = render(source, context, autoescape=field in spec.escaped)
        except TemplateError as exc:
            raise TemplateError(f"{channel}.{field}: {exc}") from exc
    if channel == "email" and output.get("html") and not output.get("text"):
        output["text"] = text_from_html(output["html"])
    return output


def template_problems(templates: dict) -> dict[str, list[str]]:
    """Syntax and shape problems of a type's templates, keyed by field path."""
    problems: dict[str, list[str]] = {}
    for channel, variants in (templates or {}).items():
        spec = CHANNELS.get(channel)
        if spec is None:
            problems.setdefault(f"templates.{channel}", []).append("Unknown channel.")
            continue
        for locale, variant in variants.items():
            for field, source in variant.items():
                path = f"templates.{channel}.{locale}.{field}"
                if field not in spec.fields:
                    problems.setdefault(path, []).append(
                        f"Unknown field; {channel} has {', '.join(spec.fields)}."
                    )
                elif not isinstance(source, str):
                    problems.setdefault(path, []).append("Must be a template string.")
                elif (problem := check_syntax(source)) is not None:
                    problems.setdefault(path, []).append(problem)
    return problems


def missing_fields(channel: str, fields: Mapping[str, object]) -> list[tuple[str, str]]:
    """(field, message) for each field group `channel` requires that `fields`
    leaves empty; the field named is the group's first."""

    def filled(name: str) -> bool:
        value = fields.get(name)
        return isinstance(value, str) and bool(value.strip())

    return [
        (required.fields[0], required.message)
        for required in (CHANNELS[channel].required if channel in CHANNELS else ())
        if not any(filled(name) for name in required.fields)
    ]


def require_content(channel: str, content: Mapping[str, object]) -> None:
    """TemplateError if rendered content lacks what its channel requires (an
    email whose subject rendered empty is not sent)."""
    missing = missing_fields(channel, content)
    if missing:
        raise TemplateError(
            " ".join(f"{channel}.{field} rendered empty: {message}" for field, message in missing)
        )


def template_gaps(
    *, templates: dict, channels: Iterable[str], default_locale: str
) -> dict[str, list[str]]:
    """What keeps a type's messages from being complete, keyed by field path:
    an enabled channel without a template for the default locale, a template
    (of any channel, enabled or not) without a field its channel requires."""
    problems: dict[str, list[str]] = {}
    defaults = {locale.lower() for locale in locale_chain("", default_locale)}
    for channel in channels:
        if channel in CHANNELS and CHANNELS[channel].default_content is not None:
            continue
        variants = templates.get(channel) or {}
        if not variants:
            problems[f"templates.{channel}"] = [
                f"The channel {channel} is enabled but has no template."
            ]
        elif defaults and not defaults & {locale.lower() for locale in variants}:
            problems[f"templates.{channel}"] = [
                f"The channel {channel} has no template for the default locale {default_locale}."
            ]
    for channel, variants in templates.items():
        for locale, variant in variants.items():
            for field, message in missing_fields(channel, variant):
                problems.setdefault(f"templates.{channel}.{locale}.{field}", []).append(message)
    return problems
