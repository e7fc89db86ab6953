"""JSON shapes of the API: output functions, and serializers that document
request bodies in the OpenAPI schema (validation itself is in services)."""

from __future__ import annotations

from rest_framework import serializers

from common.choices import Channel, DeliveryStatus, EventStatus, Priority
from notifications.models import Event, NotificationType


def type_json(notification_type: NotificationType) -> dict:
    return {
        "key": notification_type.key,
        "category": notification_type.category,
        "priority": notification_type.priority,
        "channels": notification_type.channels,
        "required_channels": notification_type.required_channels,
        "default_locale": notification_type.default_locale,
        "templates": notification_type.templates,
        "sample_data": notification_type.sample_data,
        "digest": notification_type.digest,
        "throttle": notification_type.throttle,
        "escalation": notification_type.escalation,
        "retired_at": notification_type.retired_at,
        "updated_at": notification_type.updated_at,
    }


def event_json(event: Event, counts: dict) -> dict:
    return {
        "id": str(event.id),
        "type": event.type.key,
        "status": event.status,
        "priority": event.priority,
        "recipients": event.recipients,
        "actor": event.actor or None,
        "data": event.data,
        "channels": event.channels,
        "send_at": event.send_at,
        "idempotency_key": event.idempotency_key,
        "created_at": event.created_at,
        "finished_at": event.finished_at,
        "recipient_count": event.recipient_count,
        "fanout": {
            "pages_done": event.fanout_page,
            "source": event.fanout_source,
            "cursor": event.fanout_cursor,
        },
        "deliveries": counts,
    }


class TopicRef(serializers.Serializer):
    topic = serializers.CharField()


class EventRequest(serializers.Serializer):
    type = serializers.CharField(help_text="Notification type key, e.g. comment.created.")
    recipients = serializers.ListField(
        child=serializers.JSONField(),
        help_text='External ids and {"topic": key} objects; at most 1,000 ids.',
    )
    actor = serializers.CharField(required=False)
    data = serializers.DictField(
        required=False, help_text="Template variables; at most 64 KiB as JSON."
    )
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    send_at = serializers.DateTimeField(required=False)
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices), required=False
    )
    idempotency_key = serializers.CharField(required=False, max_length=255)


class EventAccepted(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.CharField()


class BatchRequest(serializers.Serializer):
    events = EventRequest(many=True)


class ProfileRequest(serializers.Serializer):
    email = serializers.EmailField(required=False)
    phone = serializers.CharField(required=False)
    locale = serializers.CharField(required=False)
    timezone = serializers.CharField(required=False)
    data = serializers.DictField(required=False)


class SubscribersRequest(serializers.Serializer):
    add = serializers.ListField(child=serializers.CharField(), required=False)
    remove = serializers.ListField(child=serializers.CharField(), required=False)


class NotificationTypeRequest(serializers.Serializer):
    category = serializers.CharField(required=False)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices), required=False
    )
    required_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices), required=False
    )
    default_locale = serializers.CharField(required=False)
    templates = serializers.DictField(required=False)
    digest = serializers.DictField(required=False, allow_null=True)
    throttle = serializers.DictField(required=False, allow_null=True)
    escalation = serializers.DictField(
        required=False,
        allow_null=True,
        help_text='Unread in-app notifications escalate: {"after_seconds": 900,'
        ' "channels": ["email"]}.',
    )
    sample_data = serializers.DictField(required=False, help_text="Data for the admin preview.")


class InboxItem(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    category = serializers.CharField()
    title = serializers.CharField()
    body = serializers.CharField()
    url = serializers.CharField(allow_null=True)
    actor = serializers.CharField(allow_null=True)
    data = serializers.DictField()
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True)
    archived_at = serializers.DateTimeField(allow_null=True)


class InboxPage(serializers.Serializer):
    results = InboxItem(many=True)
    next_cursor = serializers.CharField(allow_null=True)


# --- Schema only, below: the views and services build these answers as dicts;
# the serializers describe them in the OpenAPI schema and validate nothing.


class Problem(serializers.Serializer):
    """RFC 9457 problem details: the body of every 4xx/5xx answer under /api/
    (`application/problem+json`). Some problems carry more members, e.g.
    `retry_after` and `backlog_seconds` on a refusal under backpressure."""

    type = serializers.CharField(help_text="A URI naming the problem; `about:blank` here.")
    title = serializers.CharField(help_text="The status code's phrase, e.g. `Invalid input`.")
    status = serializers.IntegerField(help_text="The HTTP status code.")
    detail = serializers.CharField(help_text="What went wrong, for a human.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors: field path (`recipients[3]`, `data`) to messages.",
    )


class BatchResults(serializers.Serializer):
    results = serializers.ListField(
        child=serializers.DictField(),
        help_text="One per event of the request, in order: `{id, status}` when accepted,"
        " else a problem object (type, title, status, detail, errors).",
    )


class Fanout(serializers.Serializer):
    pages_done = serializers.IntegerField()
    source = serializers.IntegerField()
    cursor = serializers.IntegerField()


class EventRecipients(serializers.Serializer):
    ids = serializers.ListField(child=serializers.CharField(), help_text="External ids.")
    topics = serializers.ListField(child=serializers.CharField(), help_text="Topic keys.")


class EventDetail(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=EventStatus.choices)
    priority = serializers.ChoiceField(choices=Priority.choices)
    recipients = EventRecipients(help_text="The recipients as named, ids and topics apart.")
    actor = serializers.CharField(allow_null=True)
    data = serializers.DictField()
    channels = serializers.ListField(child=serializers.CharField(), allow_null=True)
    send_at = serializers.DateTimeField(allow_null=True)
    idempotency_key = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    recipient_count = serializers.IntegerField()
    fanout = Fanout()
    deliveries = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="Counts by channel, then by delivery status.",
    )
    delivery_reasons = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="Skipped deliveries: counts by channel, then by reason.",
    )


class RecipientProfile(serializers.Serializer):
    external_id = serializers.CharField()
    email = serializers.CharField()
    phone = serializers.CharField()
    locale = serializers.CharField()
    timezone = serializers.CharField()
    data = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class QuietHours(serializers.Serializer):
    start = serializers.RegexField(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", help_text="HH:MM")
    end = serializers.RegexField(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", help_text="HH:MM")


class Preferences(serializers.Serializer):
    """The whole preferences document; PUT replaces it (absent parts are emptied)."""

    channels = serializers.DictField(
        child=serializers.BooleanField(), required=False, help_text="Global, per channel."
    )
    categories = serializers.DictField(
        child=serializers.DictField(child=serializers.BooleanField()),
        required=False,
        help_text="Per category, per channel.",
    )
    types = serializers.DictField(
        child=serializers.DictField(child=serializers.BooleanField()),
        required=False,
        help_text="Per notification type key, per channel.",
    )
    quiet_hours = QuietHours(
        required=False, allow_null=True, help_text="In the recipient's timezone."
    )
    daily_caps = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100_000),
        required=False,
        help_text="Per channel, deliveries a day at most.",
    )


class RecipientExport(serializers.Serializer):
    recipient = RecipientProfile()
    preferences = Preferences()
    topics = serializers.ListField(child=serializers.CharField())
    notifications = serializers.ListField(child=serializers.DictField())
    deliveries = serializers.ListField(child=serializers.DictField())
    push_tokens = serializers.ListField(child=serializers.DictField())
    web_push_subscriptions = serializers.ListField(child=serializers.DictField())
    triggers = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="Saved-search triggers."
    )


class RecipientToken(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Recipient <token>`.")
    expires_at = serializers.DateTimeField()


class SubscribersChanged(serializers.Serializer):
    added = serializers.IntegerField()
    removed = serializers.IntegerField()
    subscribers = serializers.IntegerField(help_text="The topic's subscribers now.")


class SubscribersPage(serializers.Serializer):
    results = serializers.ListField(child=serializers.CharField(), help_text="External ids.")
    next_cursor = serializers.CharField(allow_null=True)


class NotificationTypeOut(serializers.Serializer):
    key = serializers.CharField()
    category = serializers.CharField()
    priority = serializers.ChoiceField(choices=Priority.choices)
    channels = serializers.ListField(child=serializers.ChoiceField(choices=Channel.choices))
    required_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices)
    )
    default_locale = serializers.CharField()
    templates = serializers.DictField()
    sample_data = serializers.DictField()
    digest = serializers.DictField(allow_null=True)
    throttle = serializers.DictField(allow_null=True)
    escalation = serializers.DictField(allow_null=True)
    retired_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()


class NotificationTypeList(serializers.Serializer):
    results = NotificationTypeOut(many=True)


class PushTokenRequest(serializers.Serializer):
    token = serializers.CharField(max_length=2048)
    platform = serializers.ChoiceField(choices=["fcm", "apns"])


class PushTokenRef(serializers.Serializer):
    token = serializers.CharField(max_length=2048)


class PushToken(serializers.Serializer):
    token = serializers.CharField()
    platform = serializers.ChoiceField(choices=["fcm", "apns"])
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


class PushTokenList(serializers.Serializer):
    results = PushToken(many=True)


class DeliveryAttempt(serializers.Serializer):
    at = serializers.DateTimeField()
    provider = serializers.CharField()
    outcome = serializers.CharField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)


class Delivery(serializers.Serializer):
    id = serializers.IntegerField()
    event = serializers.UUIDField()
    recipient = serializers.CharField(help_text="The recipient's external id.")
    channel = serializers.ChoiceField(choices=Channel.choices)
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    reason = serializers.CharField()
    attempt_count = serializers.IntegerField()
    attempts = DeliveryAttempt(many=True, help_text="The latest 20, oldest first.")
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    provider = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class DeliveryPage(serializers.Serializer):
    results = Delivery(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class ReplayRequest(serializers.Serializer):
    """`ids`, or `status` (and optionally `channel`), not both."""

    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=10_000
    )
    status = serializers.ChoiceField(choices=["dead", "failed"], required=False)
    channel = serializers.ChoiceField(
        choices=[c for c in Channel.values if c != Channel.IN_APP], required=False
    )


class Replayed(serializers.Serializer):
    replayed = serializers.IntegerField(help_text="Deliveries queued again.")


class SweepRun(serializers.Serializer):
    name = serializers.CharField()
    started_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField()
    rows_examined = serializers.IntegerField()
    events_produced = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["ok", "skipped", "failed"])
    error = serializers.CharField()


class SweepRunList(serializers.Serializer):
    results = SweepRun(many=True)


class UnreadCount(serializers.Serializer):
    count = serializers.IntegerField()


class ReadAll(serializers.Serializer):
    updated = serializers.IntegerField(help_text="Notifications marked read.")
