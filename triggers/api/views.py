"""Triggers' API views: thin; the work is in triggers.services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.api.parsers import request_json
from notifications.api.path_ids import CheckedPathView, check_recipient_id
from notifications.api.schema import problems
from notifications.api.serializers import EventRequest
from triggers.services import broadcasts, items, reminders, saved_searches

# --- Schema only: the services parse and validate the bodies (422 naming the field).


class Item(serializers.Serializer):
    kind = serializers.RegexField(r"^[A-Za-z0-9_.:\-]{1,64}$", help_text="e.g. `load`.")
    id = serializers.CharField(max_length=128, help_text="The producer's id of the item.")
    attributes = serializers.DictField(required=False, help_text="At most 16 KiB as JSON.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ItemBatch(serializers.Serializer):
    items = Item(many=True, max_length=1000)


class ItemsWritten(serializers.Serializer):
    status = serializers.ChoiceField(choices=["accepted"])
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()


_CHANGES = serializers.ListField(
    child=serializers.ChoiceField(choices=saved_searches.CHANGES), min_length=1
)


class TriggerRequest(serializers.Serializer):
    kind = serializers.CharField()
    match = serializers.DictField(
        help_text="Attribute to a value (equality), a list (any of), or {gte, lte}."
    )
    on = serializers.ListField(
        child=serializers.ChoiceField(choices=saved_searches.CHANGES),
        min_length=1,
        required=False,
        help_text='Default ["created"].',
    )
    type = serializers.CharField(help_text="The notification type of the events it makes.")


class Trigger(serializers.Serializer):
    key = serializers.CharField()
    kind = serializers.CharField()
    match = serializers.DictField()
    on = _CHANGES
    type = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TriggerList(serializers.Serializer):
    results = Trigger(many=True)


class ReminderRequest(serializers.Serializer):
    type = serializers.CharField()
    recipients = serializers.ListField(
        child=serializers.JSONField(), help_text='External ids and {"topic": key} objects.'
    )
    due_at = serializers.DateTimeField()
    offsets = serializers.ListField(
        child=serializers.RegexField(r"^\d{1,6}[smhdw]$"),
        required=False,
        max_length=10,
        help_text='Before due_at, each fired once: "24h", "30m", "0s" (default ["0s"]).',
    )
    data = serializers.DictField(required=False)


class ReminderOffset(serializers.Serializer):
    offset = serializers.CharField()
    fire_at = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=["pending", "fired", "skipped"])
    event_id = serializers.UUIDField(required=False, help_text="Once fired.")


class Reminder(serializers.Serializer):
    key = serializers.CharField()
    due_at = serializers.DateTimeField()
    offsets = ReminderOffset(many=True)


class BroadcastRequest(serializers.Serializer):
    cron = serializers.CharField(help_text="Five fields, e.g. `0 9 * * MON`.")
    timezone = serializers.CharField(required=False, help_text="IANA zone; UTC by default.")
    event = EventRequest(help_text="An event body without send_at and idempotency_key.")


class Broadcast(serializers.Serializer):
    key = serializers.CharField()
    cron = serializers.CharField()
    timezone = serializers.CharField()
    event = serializers.DictField()
    enabled = serializers.BooleanField()
    next_run_at = serializers.DateTimeField(allow_null=True)
    last_fired_slot = serializers.DateTimeField(allow_null=True)


ITEMS_REQUEST = PolymorphicProxySerializer(
    component_name="ItemsRequest",
    serializers=[Item, ItemBatch],
    resource_type_field_name=None,
)
LOAD = {
    "kind": "load",
    "id": "L-991",
    "attributes": {"origin": "Dallas, TX", "equipment": "van", "rate": 2.4},
    "expires_at": "2026-12-31T00:00:00Z",
}


class ItemsView(APIView):
    def rate_cost(self, request) -> int:
        """One token per item (read by ApiKeyRateThrottle)."""
        body = request_json(request)
        batch = body.get("items") if isinstance(body, dict) else None
        return len(batch) if isinstance(batch, list) and batch else 1

    @extend_schema(
        request=ITEMS_REQUEST,
        responses={202: ItemsWritten, **problems(422)},
        examples=[
            OpenApiExample("One item", LOAD, request_only=True),
            OpenApiExample("A batch", {"items": [LOAD]}, request_only=True),
        ],
        summary='Create or update items: one, or {"items": [... up to 1,000 ...]}',
        description="Posting an existing (kind, id) again updates it.",
    )
    def post(self, request):
        written = items.items_put(items.parse_items(request_json(request)))
        return Response(written.as_json(), status=status.HTTP_202_ACCEPTED)


class RecipientTriggersView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        operation_id="recipients_triggers_list",
        responses={200: TriggerList, **problems(404, 422)},
        summary="A recipient's saved-search triggers",
    )
    def get(self, request, external_id: str):
        rows = saved_searches.triggers_list(external_id=external_id)
        return Response({"results": [row.as_json() for row in rows]})


class RecipientTriggerView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id, "key": saved_searches.check_trigger_key}

    @extend_schema(
        request=TriggerRequest,
        responses={200: Trigger, 201: Trigger, **problems(409, 422)},
        examples=[
            OpenApiExample(
                "Dallas vans and reefers",
                {
                    "kind": "load",
                    "match": {
                        "origin": "Dallas, TX",
                        "equipment": ["van", "reefer"],
                        "rate": {"gte": 2.0},
                    },
                    "on": ["created"],
                    "type": "load.match",
                },
                request_only=True,
            )
        ],
        summary="Create or replace a saved-search trigger",
    )
    def put(self, request, external_id: str, key: str):
        row, created = saved_searches.trigger_put(
            external_id=external_id, key=key, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        responses={204: None, **problems(404, 422)}, summary="Remove a saved-search trigger"
    )
    def delete(self, request, external_id: str, key: str):
        saved_searches.trigger_delete(external_id=external_id, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReminderView(APIView):
    @extend_schema(
        responses={200: Reminder, **problems(404, 422)},
        summary="A reminder and the state of each offset",
    )
    def get(self, request, key: str):
        row = reminders.reminder_get(api_key_id=request.user.api_key_id, key=key)
        return Response(row.as_json())

    @extend_schema(
        request=ReminderRequest,
        responses={200: Reminder, 201: Reminder, **problems(422)},
        examples=[
            OpenApiExample(
                "A day and an hour before",
                {
                    "type": "appointment.reminder",
                    "recipients": ["u1"],
                    "due_at": "2026-12-24T15:00:00Z",
                    "offsets": ["24h", "1h"],
                    "data": {"what": "Dentist"},
                },
                request_only=True,
            )
        ],
        summary="Create or replace a reminder",
        description="Each offset fires once; one whose time has passed when it is first set"
        " is skipped.",
    )
    def put(self, request, key: str):
        row, created = reminders.reminder_put(
            api_key_id=request.user.api_key_id, key=key, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        responses={204: None, **problems(404, 422)},
        summary="Cancel what has not fired of a reminder",
    )
    def delete(self, request, key: str):
        reminders.reminder_delete(api_key_id=request.user.api_key_id, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BroadcastView(APIView):
    @extend_schema(
        responses={200: Broadcast, **problems(404, 422)},
        summary="A broadcast, its next run and the last slot it fired",
    )
    def get(self, request, key: str):
        row = broadcasts.broadcast_get(api_key_id=request.user.api_key_id, key=key)
        return Response(row.as_json())

    @extend_schema(
        request=BroadcastRequest,
        responses={200: Broadcast, 201: Broadcast, **problems(422)},
        examples=[
            OpenApiExample(
                "Mondays at nine, Chicago time",
                {
                    "cron": "0 9 * * MON",
                    "timezone": "America/Chicago",
                    "event": {"type": "digest.weekly", "recipients": [{"topic": "all"}]},
                },
                request_only=True,
            )
        ],
        summary="Create or replace a broadcast",
    )
    def put(self, request, key: str):
        row, created = broadcasts.broadcast_put(
            api_key_id=request.user.api_key_id, key=key, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        responses={204: None, **problems(404, 422)}, summary="Remove a broadcast and its schedule"
    )
    def delete(self, request, key: str):
        broadcasts.broadcast_delete(api_key_id=request.user.api_key_id, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)
