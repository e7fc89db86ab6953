"""Choices shared by every app: priorities, channels, event and delivery statuses.

They are stored as text in the database; the apps above compare against these
values, never against string literals of their own.
"""

from __future__ import annotations

from django.db import models


class Priority(models.TextChoices):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Channel(models.TextChoices):
    IN_APP = "in_app"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEB_PUSH = "web_push"
    WEBHOOK = "webhook"


# Channels that get a Delivery row. In-app needs none: the Notification row is
# the in-app delivery (delivered when inserted, opened when read).
EXTERNAL_CHANNELS = tuple(c.value for c in Channel if c != Channel.IN_APP)


class EventStatus(models.TextChoices):
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    PROCESSING = "processing"
    DONE = "done"
    CANCELLED = "cancelled"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    FAILED = "failed"
    DEAD = "dead"
    SKIPPED = "skipped"
