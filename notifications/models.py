"""The spine's tables: who (recipients, topics), what (types, events), and the
result of fan-out (notifications, deliveries, attempts).

Indexes are declared next to the query that needs them; see the comments.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from common.choices import Channel, DeliveryStatus, EventStatus, Priority
from common.ids import uuid7
from notifications.rates import RATE_HELP, validate_rate


class ApiKey(models.Model):
    """A producer credential. Only the SHA-256 of the key is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=16, help_text="First characters of the key, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    rate_limit = models.CharField(
        max_length=20, blank=True, default="", validators=[validate_rate], help_text=RATE_HELP
    )

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Recipient(models.Model):
    external_id = models.CharField(max_length=128, unique=True)
    email = models.CharField(max_length=254, blank=True, default="")
    phone = models.CharField(max_length=32, blank=True, default="")
    locale = models.CharField(max_length=35, blank=True, default="")
    timezone = models.CharField(max_length=64, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    # A Django user whose browser session may read this recipient's inbox.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Recipient tokens issued before this instant no longer authenticate
    # (DELETE /api/v1/recipients/{id}/tokens); null: every unexpired token does.
    tokens_valid_after = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.external_id


class Topic(models.Model):
    key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class Subscription(models.Model):
    # The unique (topic, recipient) index is also the fan-out cursor: pages of a
    # topic are `recipient_id > cursor ORDER BY recipient_id LIMIT n`.
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, db_index=False)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "recipient"], name="subscription_topic_recipient_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.topic_id} <- {self.recipient_id}"


class NotificationType(models.Model):
    key = models.CharField(max_length=150, unique=True)
    category = models.CharField(max_length=100, default="general")
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    channels = ArrayField(models.CharField(max_length=16, choices=Channel.choices), default=list)
    required_channels = ArrayField(
        models.CharField(max_length=16, choices=Channel.choices), default=list, blank=True
    )
    default_locale = models.CharField(max_length=35, default="en")
    templates = models.JSONField(default=dict, blank=True)
    # Example event data for the admin's live preview and test sends.
    sample_data = models.JSONField(default=dict, blank=True)
    digest = models.JSONField(null=True, blank=True)
    throttle = models.JSONField(null=True, blank=True)
    # {"after_seconds": S, "channels": [...]}: an in-app item still unread S
    # seconds after it was created is also delivered on those channels.
    escalation = models.JSONField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key


class Event(models.Model):
    """The outbox: one accepted producer request, durable from the 202 on."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    type = models.ForeignKey(NotificationType, on_delete=models.PROTECT, db_index=False)
    # {"ids": ["u1", "u2"], "topics": ["k"]}: explicit ids and topic keys, deduplicated.
    recipients = models.JSONField()
    actor = models.CharField(max_length=128, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices)
    channels = ArrayField(models.CharField(max_length=16), null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)
    # NULL when the producer sent no key: "" would read as a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    status = models.CharField(
        max_length=12, choices=EventStatus.choices, default=EventStatus.ACCEPTED
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Fan-out progress: the page task expected next, the recipient source it is
    # in and the last recipient id done in that source. A page task whose page
    # number is not `fanout_page` is a duplicate and does nothing.
    fanout_page = models.IntegerField(default=0)
    fanout_source = models.IntegerField(default=0)
    fanout_cursor = models.BigIntegerField(default=0)
    recipient_count = models.IntegerField(default=0)
    # When a task for this event was last published; the relay re-publishes
    # events whose task has been gone too long.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    relay_attempts = models.IntegerField(default=0)
    # When a page task last began the page due. A start later than the last
    # publish, on a row no transaction holds, is a page whose worker died:
    # the relay re-publishes it within RELAY_DEAD_PAGE_SECONDS.
    page_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Relay: events waiting for (or in) fan-out, oldest publish first.
            models.Index(
                fields=["enqueued_at"],
                name="event_pending_idx",
                condition=Q(status__in=["accepted", "processing"]),
            ),
            # Priority lanes: the waiting events of a priority in acceptance order.
            models.Index(
                fields=["priority", "id"], name="event_waiting_idx", condition=Q(status="accepted")
            ),
            # Backlog age (services/backpressure.py, /metrics): the oldest publish of
            # the events mid-fan-out, per priority; few rows, so a small index.
            models.Index(
                fields=["priority", "enqueued_at"],
                name="event_processing_idx",
                condition=Q(status="processing"),
            ),
            # Relay: scheduled events coming due.
            models.Index(
                fields=["send_at"], name="event_scheduled_idx", condition=Q(status="scheduled")
            ),
            # Admin and operators: recent events of a type.
            models.Index(fields=["type", "-created_at"], name="event_type_created_idx"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class IdempotencyKey(models.Model):
    """A producer's idempotency key, kept at least 24 hours (see the purge task)."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, db_index=False)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    event = models.ForeignKey(
        Event, null=True, on_delete=models.SET_NULL, db_constraint=False, db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_uniq")
        ]

    def __str__(self) -> str:
        return self.key


class Notification(models.Model):
    """The in-app inbox item: one per (event, recipient)."""

    # No database-level foreign keys on the fan-out's hot table: the per-row
    # constraint triggers doubled the insert cost (measured: 100,000 rows in
    # ~1.3 s with them, ~0.6 s without). Rows are only written by fan-out,
    # which takes both ids from rows it has just locked or read, and removed
    # by the set-based erasure in services.recipients.
    event = models.ForeignKey(Event, on_delete=models.CASCADE, db_index=False, db_constraint=False)
    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    title = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    url = models.TextField(blank=True, default="")
    # False when the event's channels leave out in_app: the row still anchors
    # the external deliveries but never shows in the inbox.
    visible = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Exactly once per (event, recipient): fan-out inserts ON CONFLICT DO NOTHING.
            models.UniqueConstraint(
                fields=["event", "recipient"], name="notification_event_recipient_uniq"
            )
        ]
        indexes = [
            # Inbox pages, newest first (keyset on id).
            models.Index(
                fields=["recipient", "-id"],
                name="notification_inbox_idx",
                condition=Q(visible=True),
            ),
            # Unread count and the unread filter: only unread rows are in it.
            models.Index(
                fields=["recipient", "-id"],
                name="notification_unread_idx",
                condition=Q(read_at__isnull=True, archived_at__isnull=True, visible=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id}: {self.title}"


class UnreadCount(models.Model):
    """A recipient's unread notifications (visible, unread, not archived): the
    number `GET /inbox/unread-count` and every websocket frame carry.

    Kept exact by statement-level triggers on notifications_notification (see
    migration 0010_unread_counter), in the writing transaction, so reading it
    costs one primary-key lookup however long the recipient's history is. No
    row means 0. Writes made with session_replication_role = replica skip the
    triggers; recount after them (bench/inbox.py does).
    """

    # ON DELETE CASCADE in the database (the migration's DDL): erasing a
    # recipient drops its counter without the ORM collecting it.
    recipient = models.OneToOneField(
        Recipient, primary_key=True, on_delete=models.DO_NOTHING, related_name="+"
    )
    count = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.recipient_id}: {self.count} unread"


class Delivery(models.Model):
    """One notification on one external channel, with its status lifecycle."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(
        max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED
    )
    reason = models.CharField(max_length=64, blank=True, default="")
    address = models.TextField(blank=True, default="")
    content = models.JSONField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    # The provider that took it last, and its id for the message (a Twilio
    # SID, an ESP's message id), which its status callbacks name.
    provider = models.CharField(max_length=100, blank=True, default="", db_default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "channel"], name="delivery_notification_channel_uniq"
            )
        ]
        indexes = [
            # Dispatch sweep: deliveries waiting to be sent or retried.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=Q(status__in=["queued", "failed"]),
            ),
            # Provider status callbacks name the provider's id for a message.
            models.Index(
                fields=["provider_message_id"],
                name="delivery_provider_msg_idx",
                condition=~Q(provider_message_id=""),
            ),
            # Dead letters and failures, by channel, for replay.
            models.Index(
                fields=["channel", "id"],
                name="delivery_undelivered_idx",
                condition=Q(status__in=["failed", "dead"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.channel} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    created_at = models.DateTimeField(auto_now_add=True)
    status_code = models.IntegerField(null=True, blank=True)
    response = models.TextField(blank=True, default="")
    duration_ms = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Which provider answered ("email:smtp:mail.example.com") and what it
    # meant: sent, retry (a failure worth trying again) or failed.
    provider = models.CharField(max_length=100, blank=True, default="", db_default="")
    outcome = models.CharField(max_length=16, blank=True, default="", db_default="")

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class PushToken(models.Model):
    """A mobile device's push token (FCM or APNs) of a recipient."""

    class Platform(models.TextChoices):
        FCM = "fcm"
        APNS = "apns"

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="push_tokens")
    platform = models.CharField(max_length=8, choices=Platform.choices)
    token = models.CharField(max_length=4096)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient", "token"], name="push_token_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.platform} {self.token[:12]}…"


class WebPushSubscription(models.Model):
    """A browser's push subscription (the PushSubscription JSON) of a recipient."""

    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, related_name="web_push_subscriptions"
    )
    endpoint = models.CharField(max_length=2048)
    p256dh = models.CharField(max_length=255)
    auth = models.CharField(max_length=255)
    user_agent = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient", "endpoint"], name="web_push_endpoint_uniq")
        ]

    def __str__(self) -> str:
        return self.endpoint[:80]


class WebhookEndpoint(models.Model):
    """A producer's subscription to status events (`delivery.sent`, …)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE)
    url = models.CharField(max_length=2048)
    event_types = ArrayField(models.CharField(max_length=40), default=list)
    secret = models.CharField(max_length=100)  # whsec_… (Standard Webhooks)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class StatusWebhookCall(models.Model):
    """One status event to one endpoint: an outbox row, sent and retried like a delivery."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, db_index=False)
    message_id = models.CharField(max_length=64, unique=True)  # webhook-id: msg_…
    event_type = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=8, default="queued")  # queued | sent | dead
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="status_webhook_due_idx",
                condition=Q(status="queued"),
            ),
            models.Index(fields=["endpoint", "created_at"], name="status_webhook_endpoint_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint_id} ({self.status})"


class DigestWindow(models.Model):
    """Events of one type for one recipient (and digest key) gathered over a
    window, delivered as one notification when it closes."""

    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    type = models.ForeignKey(NotificationType, on_delete=models.CASCADE, db_index=False)
    key = models.CharField(max_length=255, blank=True, default="")
    opened_at = models.DateTimeField()
    closes_at = models.DateTimeField()
    status = models.CharField(max_length=8, default="open")  # open | flushed
    item_count = models.IntegerField(default=0)
    flushed_at = models.DateTimeField(null=True, blank=True)
    first_event = models.ForeignKey(
        Event, null=True, on_delete=models.SET_NULL, db_constraint=False, db_index=False
    )

    class Meta:
        constraints = [
            # At most one open window per (recipient, type, key): the heart of "exactly one digest".
            models.UniqueConstraint(
                fields=["recipient", "type", "key"],
                condition=Q(status="open"),
                name="digest_one_open_window",
            )
        ]
        indexes = [
            # The flush sweep: open windows whose time has come.
            models.Index(fields=["closes_at"], name="digest_due_idx", condition=Q(status="open")),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_id} {self.key or '-'} ({self.status})"


class DigestItem(models.Model):
    window = models.ForeignKey(DigestWindow, on_delete=models.CASCADE, db_index=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["window", "event"], name="digest_item_uniq")]

    def __str__(self) -> str:
        return f"{self.window_id}: {self.event_id}"


class SweepRun(models.Model):
    """One run of a scheduled sweep (Beat): what it looked at and what it made."""

    name = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    duration_ms = models.IntegerField()
    rows_examined = models.BigIntegerField(default=0)
    events_produced = models.BigIntegerField(default=0)
    # ok, skipped (another run of the same sweep held it), failed
    status = models.CharField(max_length=8, default="ok")
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["-started_at"], name="sweeprun_started_idx"),
            models.Index(fields=["name", "-started_at"], name="sweeprun_name_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} @ {self.started_at:%Y-%m-%d %H:%M:%S}"
