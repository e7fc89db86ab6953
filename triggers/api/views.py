"""Triggers' API views: thin; the work is in triggers.services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.api.parsers import request_json
from notifications.api.path_ids import CheckedPathView, check_recipient_id
from triggers.services import broadcasts, items, reminders, saved_searches


class ItemsView(APIView):
    def rate_cost(self, request) -> int:
        """One token per item (read by ApiKeyRateThrottle)."""
        body = request_json(request)
        batch = body.get("items") if isinstance(body, dict) else None
        return len(batch) if isinstance(batch, list) and batch else 1

    @extend_schema(
        request=None,
        responses={202: None},
        summary='Create or update items: one, or {"items": [... up to 1,000 ...]}',
    )
    def post(self, request):
        written = items.items_put(items.parse_items(request_json(request)))
        return Response(written.as_json(), status=status.HTTP_202_ACCEPTED)


class RecipientTriggersView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(summary="A recipient's saved-search triggers")
    def get(self, request, external_id: str):
        rows = saved_searches.triggers_list(external_id=external_id)
        return Response({"results": [row.as_json() for row in rows]})


class RecipientTriggerView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id, "key": saved_searches.check_trigger_key}

    @extend_schema(request=None, summary="Create or replace a saved-search trigger")
    def put(self, request, external_id: str, key: str):
        row, created = saved_searches.trigger_put(
            external_id=external_id, key=key, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(responses={204: None}, summary="Remove a saved-search trigger")
    def delete(self, request, external_id: str, key: str):
        saved_searches.trigger_delete(external_id=external_id, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReminderView(APIView):
    @extend_schema(summary="A reminder and the state of each offset")
    def get(self, request, key: str):
        row = reminders.reminder_get(api_key_id=request.user.api_key_id, key=key)
        return Response(row.as_json())

    @extend_schema(
        request=None,
        summary='Create or replace a reminder: {"type", "recipients", "due_at", "offsets", "data"}',
    )
    def put(self, request, key: str):
        row, created = reminders.reminder_put(
            api_key_id=request.user.api_key_id, key=key, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(responses={204: None}, summary="Cancel what has not fired of a reminder")
    def delete(self, request, key: str):
        reminders.reminder_delete(api_key_id=request.user.api_key_id, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BroadcastView(APIView):
    @extend_schema(summary="A broadcast, its next run and the last slot it fired")
    def get(self, request, key: str):
        row = broadcasts.broadcast_get(api_key_id=request.user.api_key_id, key=key)
        return Response(row.as_json())

    @extend_schema(
        request=None,
        summary='Create or replace a broadcast: {"cron", "timezone", "event"}',
    )
    def put(self, request, key: str):
        row, created = broadcasts.broadcast_put(
            api_key_id=request.user.api_key_id, key=key, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(responses={204: None}, summary="Remove a broadcast and its schedule")
    def delete(self, request, key: str):
        broadcasts.broadcast_delete(api_key_id=request.user.api_key_id, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)
