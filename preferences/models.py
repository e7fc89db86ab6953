"""A recipient's preferences: channel on/off at three scopes, quiet hours, daily caps.

A missing row has a defined meaning: see docs/preferences.md.
"""

from __future__ import annotations

from django.db import models

from common.choices import Channel

# Recipients live in `notifications`, the layer above: the foreign keys name the
# model by its label, so this layer never imports that one.
RECIPIENT = "notifications.Recipient"


class Scope(models.TextChoices):
    GLOBAL = "global"
    CATEGORY = "category"
    TYPE = "type"


class ChannelPreference(models.Model):
    """On/off for one channel at one scope: everything (global), a category, or a type."""

    recipient = models.ForeignKey(RECIPIENT, on_delete=models.CASCADE, db_index=False)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    key = models.CharField(
        max_length=150, blank=True, default="", help_text="Category or type key; empty for global."
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    enabled = models.BooleanField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Also the index fan-out probes: (recipient, channel, scope, key).
            models.UniqueConstraint(
                fields=["recipient", "channel", "scope", "key"], name="channel_preference_uniq"
            )
        ]

    def __str__(self) -> str:
        where = self.scope if self.scope == Scope.GLOBAL else f"{self.scope} {self.key}"
        return f"{self.recipient_id}: {self.channel} {'on' if self.enabled else 'off'} ({where})"


class DeliverySettings(models.Model):
    """Quiet hours and daily caps of one recipient."""

    recipient = models.OneToOneField(RECIPIENT, on_delete=models.CASCADE, primary_key=True)
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    # {"email": 5, "sms": 2}: at most that many per channel per day (recipient's time zone).
    daily_caps = models.JSONField(default=dict, blank=True)
    # A copy of the recipient's time zone (kept in step by the recipient and
    # preference services) so fan-out reads quiet hours without a join.
    timezone = models.CharField(max_length=64, blank=True, default="", db_default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "delivery settings"

    def __str__(self) -> str:
        return f"settings of {self.recipient_id}"
