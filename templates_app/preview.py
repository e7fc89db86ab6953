"""Rendering every channel of a type against sample data, for the admin preview."""
from __future__ import annotations

from templates_app.engine import TemplateError
from templates_app.rendering import build_context, render_channel, template_problems


def template_preview(*, templates: dict, sample_data: dict, locale: str, default_locale: str) -> dict:
    """{"channels": {channel: fields}, "errors": {path: [messages]}}."""
    problems = template_problems(templates)
    context = build_context(
        data=sample_data,
        actor=str(sample_data.get("actor", "Ana")),
        event={"id": "preview", "type": "preview"},
        recipient={"external_id": "preview-recipient", "locale": locale, "email": "ana@example.com", "data": {}},
    )
    rendered: dict[str, dict] = {}
    for channel in templates:
        try:
            rendered[channel] = render_channel(
                templates=templates, channel=channel, locale=locale, default_locale=default_locale, context=context
            )
        except TemplateError as exc:
            problems.setdefault(f"templates.{channel}", []).append(str(exc))
    return {"channels": rendered, "errors": problems}
