"""Standing rules that scheduled sweeps turn into events.

Exactly-once is a property of rows, not of timing: every firing is a row
under a unique index — (trigger, item, item version), (reminder, offset),
(broadcast, slot) — written in the same transaction as the event it makes.
Two sweeps that overlap, or a sweep re-run after its worker was killed,
insert nothing twice.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from notifications.models import ApiKey, NotificationType, Recipient


class Item(models.Model):
    """A producer's searchable thing (a load, a listing, a job)."""

    kind = models.CharField(max_length=64)
    external_id = models.CharField(max_length=128)
    attributes = models.JSONField(default=dict)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Sweep positions, from one sequence (ITEM_CHANGE_SEQUENCE): taken when the
    # item is created, and again at every update that changes it.
    created_seq = models.BigIntegerField()
    changed_seq = models.BigIntegerField()
    # 0 at creation, +1 at every change: a favourite fires once per version.
    version = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "external_id"], name="item_kind_id_uniq")
        ]
        indexes = [models.Index(fields=["changed_seq"], name="item_changed_seq_idx")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.external_id}"


class Trigger(models.Model):
    """A recipient's saved search: items of `kind` matching `match` become
    events of `type` to the recipient, on their creation and/or update."""

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, db_index=False)
    key = models.CharField(max_length=128)
    kind = models.CharField(max_length=64)
    match = models.JSONField(default=dict)
    on_created = models.BooleanField(default=True)
    on_updated = models.BooleanField(default=False)
    type = models.ForeignKey(NotificationType, on_delete=models.CASCADE, db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient", "key"], name="trigger_recipient_key_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.recipient_id}/{self.key}"


class TriggerAnchor(models.Model):
    """Where a sweep finds a trigger's candidate items: rows keyed by the
    values of the trigger's one or two most selective equality (or any-of)
    conditions — `attributes` (sorted) and `key`, their values in that order,
    one row per combination — so matching starts with an index join from the
    items' side (an item's values of the same attributes). A trigger of
    ranges only has one row with no attributes and key `[]` (compared with
    every item of its kind)."""

    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="anchors")
    kind = models.CharField(max_length=64)
    attributes = ArrayField(models.CharField(max_length=64))
    key = models.JSONField()

    class Meta:
        indexes = [
            models.Index(fields=["kind", "attributes", "key"], name="anchor_lookup_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}.{'+'.join(self.attributes)}={self.key!r}"


class TriggerFire(models.Model):
    """One (trigger, item version) that became an event: the exactly-once row.
    `item_version` 0 is the item's creation."""

    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, db_index=False)
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    item_version = models.IntegerField()
    event_id = models.UUIDField()
    fired_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["trigger", "item", "item_version"], name="trigger_fire_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.trigger_id} x {self.item_id} v{self.item_version}"


class Reminder(models.Model):
    """Events due relative to a date: each offset before `due_at` fires once."""

    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    type = models.ForeignKey(NotificationType, on_delete=models.CASCADE, db_index=False)
    recipients = models.JSONField()  # the event form: {"ids": [...], "topics": [...]}
    data = models.JSONField(default=dict)
    due_at = models.DateTimeField()
    offsets = ArrayField(models.IntegerField())  # seconds before due_at
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "key"], name="reminder_key_uniq", nulls_distinct=False
            ),
        ]

    def __str__(self) -> str:
        return self.key


class ReminderFire(models.Model):
    """One offset of a reminder: due at `fire_at`, fired once (`event_id`)."""

    reminder = models.ForeignKey(Reminder, on_delete=models.CASCADE, db_index=False)
    offset_seconds = models.IntegerField()
    fire_at = models.DateTimeField()
    fired_at = models.DateTimeField(null=True, blank=True)
    event_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["reminder", "offset_seconds"], name="reminder_fire_uniq"
            )
        ]
        indexes = [
            models.Index(
                fields=["fire_at"], name="reminder_fire_due_idx", condition=Q(fired_at=None)
            )
        ]

    def __str__(self) -> str:
        return f"{self.reminder_id} -{self.offset_seconds}s"


class Broadcast(models.Model):
    """An event sent on a cron schedule in an IANA zone. Its schedule is a
    django-celery-beat PeriodicTask with a CrontabSchedule in that zone."""

    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    cron = models.CharField(max_length=255)
    timezone = models.CharField(max_length=64)
    event = models.JSONField()
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "key"], name="broadcast_key_uniq", nulls_distinct=False
            ),
        ]

    def __str__(self) -> str:
        return self.key


class BroadcastFire(models.Model):
    """One slot of a broadcast's schedule that fired: the exactly-once row."""

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, db_index=False)
    slot = models.DateTimeField()
    event_id = models.UUIDField()
    fired_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["broadcast", "slot"], name="broadcast_fire_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.broadcast_id} @ {self.slot:%Y-%m-%d %H:%M}"


class SweepCursor(models.Model):
    """How far a sweep has read a change stream (e.g. the items' change sequence)."""

    name = models.CharField(max_length=64, primary_key=True)
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.position}"
