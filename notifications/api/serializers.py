"""JSON shapes of the API: output functions, and serializers that document
request bodies in the OpenAPI schema (validation itself is in services)."""

from __future__ import annotations

from rest_framework import serializers

from common.choices import Channel, Priority
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
