"""Rendering every channel of a type against sample data, for the admin preview."""

from __future__ import annotations

from templates_app.engine import TemplateError, referenced_names
from templates_app.rendering import (
    CONTEXT_NAMES,
    build_context,
    render_channel,
    require_content,
    template_problems,
)


def template_preview(
    *, templates: dict, sample_data: dict, locale: str, default_locale: str
) -> dict:
    """{"channels": {channel: fields}, "errors": {path: [messages]},
    "missing": {"channel.locale": [variables sample_data lacks]}}."""
    problems = template_problems(templates)
    context = build_context(
        data=sample_data,
        actor=str(sample_data.get("actor", "Ana")),
        event={"id": "preview", "type": "preview"},
        recipient={
            "external_id": "preview-recipient",
            "locale": locale,
            "email": "ana@example.com",
            "data": {},
        },
    )
    rendered: dict[str, dict] = {}
    for channel in templates:
        try:
            rendered[channel] = render_channel(
                templates=templates,
                channel=channel,
                locale=locale,
                default_locale=default_locale,
                context=context,
            )
            require_content(channel, rendered[channel])
        except TemplateError as exc:
            problems.setdefault(f"templates.{channel}", []).append(str(exc))
    missing = template_names_missing(templates, sample_data)
    return {"channels": rendered, "errors": problems, "missing": missing}


def template_names_missing(templates: object, sample_data: dict) -> dict[str, list[str]]:
    """Per template ("email.en"), the variables it reads that neither
    `sample_data` nor the render context (actor, event, recipient, digest) has:
    what would render empty. Malformed parts of `templates` are passed over."""
    known = CONTEXT_NAMES | set(sample_data)
    missing: dict[str, list[str]] = {}
    for channel, variants in templates.items() if isinstance(templates, dict) else ():
        for locale, variant in variants.items() if isinstance(variants, dict) else ():
            sources = variant.values() if isinstance(variant, dict) else ()
            names = set().union(*(referenced_names(s) for s in sources if isinstance(s, str)))
            if names - known:
                missing[f"{channel}.{locale}"] = sorted(names - known)
    return missing
