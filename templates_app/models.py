"""Template versions: every change of a type's template for one channel and
locale is kept, so what was sent can always be traced to the text used."""

from __future__ import annotations

from django.db import models

from common.choices import Channel

# Notification types live in `notifications`, the layer above: the foreign key
# names the model by its label, so this layer never imports that one.
NOTIFICATION_TYPE = "notifications.NotificationType"


class TemplateVersion(models.Model):
    type = models.ForeignKey(
        NOTIFICATION_TYPE, on_delete=models.CASCADE, related_name="template_versions"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    locale = models.CharField(max_length=35)
    version = models.PositiveIntegerField()
    fields = models.JSONField(help_text="The template strings, e.g. subject/text/html.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["type", "channel", "locale", "version"], name="template_version_uniq"
            )
        ]
        ordering = ["type", "channel", "locale", "-version"]

    def __str__(self) -> str:
        return f"{self.type.key} {self.channel}/{self.locale} v{self.version}"
