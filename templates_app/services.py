"""Recording template versions when a type's templates change."""
from __future__ import annotations

from django.db.models import Max

from notifications.models import NotificationType
from templates_app.models import TemplateVersion


def template_versions_record(*, notification_type: NotificationType, templates: dict) -> list[TemplateVersion]:
    """Add a version for every (channel, locale) whose fields differ from its latest version."""
    latest: dict[tuple[str, str], TemplateVersion] = {}
    for version in TemplateVersion.objects.filter(type=notification_type).order_by("channel", "locale", "-version"):
        latest.setdefault((version.channel, version.locale), version)
    created = []
    for channel, variants in (templates or {}).items():
        for locale, fields in variants.items():
            current = latest.get((channel, locale))
            if current is not None and current.fields == fields:
                continue
            created.append(
                TemplateVersion(
                    type=notification_type, channel=channel, locale=locale,
                    version=(current.version + 1) if current else 1, fields=fields,
                )
            )
    return TemplateVersion.objects.bulk_create(created)


def template_version_current(*, notification_type: NotificationType, channel: str, locale: str) -> TemplateVersion | None:
    return (
        TemplateVersion.objects.filter(type=notification_type, channel=channel, locale=locale)
        .order_by("-version").first()
    )


def template_versions_count(*, notification_type: NotificationType) -> int:
    return TemplateVersion.objects.filter(type=notification_type).aggregate(n=Max("version"))["n"] or 0
