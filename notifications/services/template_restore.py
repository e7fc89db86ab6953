"""Putting an earlier version of a type's template back."""

from __future__ import annotations

from django.db import transaction

from common.errors import NotFound
from notifications.models import NotificationType
from notifications.selectors import notification_type_cache_clear
from notifications.services.types import TYPE_FIELDS, parse_type
from templates_app.models import TemplateVersion
from templates_app.services import template_versions_record


def notification_type_template_restore(*, type_id: int, version_id: int) -> TemplateVersion:
    """Make version `version_id` the type's current template for its channel and
    locale, checked by parse_type like any change, and recorded as a new version
    (history only grows). InvalidInput when the type would no longer be valid."""
    with transaction.atomic():
        notification_type = NotificationType.objects.select_for_update().filter(id=type_id).first()
        version = TemplateVersion.objects.filter(id=version_id, type_id=type_id).first()
        if notification_type is None or version is None:
            raise NotFound("No such template version of this type.")
        body = {name: getattr(notification_type, name) for name in TYPE_FIELDS}
        templates = {channel: dict(v) for channel, v in (notification_type.templates or {}).items()}
        templates.setdefault(version.channel, {})[version.locale] = version.fields
        body["templates"] = templates
        fields = parse_type(notification_type.key, body)
        notification_type.templates = fields["templates"]
        notification_type.save(update_fields=["templates", "updated_at"])
        created = template_versions_record(type_id=type_id, templates=fields["templates"])
    notification_type_cache_clear()
    # Restoring the version that is already current records nothing new.
    return created[0] if created else version
