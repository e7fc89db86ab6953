"""Recording template versions when a type's templates change."""

from __future__ import annotations

from templates_app.models import TemplateVersion


def template_versions_record(*, type_id: int, templates: dict) -> list[TemplateVersion]:
    """Add a version for every (channel, locale) whose fields differ from its latest version."""
    latest: dict[tuple[str, str], TemplateVersion] = {}
    for version in TemplateVersion.objects.filter(type_id=type_id).order_by(
        "channel", "locale", "-version"
    ):
        latest.setdefault((version.channel, version.locale), version)
    created = []
    for channel, variants in (templates or {}).items():
        for locale, fields in variants.items():
            current = latest.get((channel, locale))
            if current is not None and current.fields == fields:
                continue
            created.append(
                TemplateVersion(
                    type_id=type_id,
                    channel=channel,
                    locale=locale,
                    version=(current.version + 1) if current else 1,
                    fields=fields,
                )
            )
    return TemplateVersion.objects.bulk_create(created)
