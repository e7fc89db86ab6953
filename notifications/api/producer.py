"""Producer API views: thin; the work is in notifications.services."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import ClarionError, NotFound
from notifications.api import serializers as s
from notifications.api.parsers import int_param, request_json
from notifications.api.path_ids import (
    CheckedPathView,
    check_recipient_id,
    check_topic_key,
    check_type_key,
)
from notifications.api.problems import problem_from_error
from notifications.api.schema import problems
from notifications.models import NotificationType, Recipient
from notifications.selectors import event_delivery_counts, event_get
from notifications.services import backpressure, events, recipients, topics, types
from notifications.services.tokens import recipient_token_issue
from preferences.services import preferences_get, preferences_put

# Schema only: the examples of ../CONTRACT.md, and parameters the views read themselves.
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Instead of the body's `idempotency_key`: the same key and body again"
    " answer as the first time; the same key with another body is 409.",
)
EVENT_ID = OpenApiParameter("event_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
EVENT_BODY = {
    "type": "comment.created",
    "recipients": ["u1", "u2", {"topic": "post:7:followers"}],
    "actor": "u9",
    "data": {"post_title": "Hello", "comment": "Nice!"},
    "priority": "high",
    "send_at": "2026-11-23T10:00:00Z",
    "channels": ["in_app", "email"],
    "idempotency_key": "comment-991",
}
EVENT_EXAMPLE = OpenApiExample("An event", EVENT_BODY, request_only=True)
ACCEPTED_BODY = {"id": "0193b3a4-5f6e-7c2d-9a41-3e8f2b7c6d15", "status": "accepted"}
ACCEPTED_EXAMPLE = OpenApiExample(
    "Accepted", ACCEPTED_BODY, response_only=True, status_codes=["202"]
)
BATCH_EXAMPLE = OpenApiExample(
    "A batch",
    {"events": [EVENT_BODY, {"type": "comment.created", "recipients": []}]},
    request_only=True,
)
BATCH_RESULTS_EXAMPLE = OpenApiExample(
    "One accepted, one refused",
    {
        "results": [
            ACCEPTED_BODY,
            {
                "type": "about:blank",
                "title": "Invalid input",
                "status": 422,
                "detail": "The event has invalid fields.",
                "errors": {"recipients": ["Must name at least one recipient."]},
            },
        ]
    },
    response_only=True,
    status_codes=["207"],
)
PROFILE_EXAMPLE = OpenApiExample(
    "A profile",
    {
        "email": "ana@example.com",
        "phone": "+15550001111",
        "locale": "pt-BR",
        "timezone": "America/Sao_Paulo",
        "data": {"webhook_url": "https://chat.example.com/hooks/T1"},
    },
    request_only=True,
)
TYPE_EXAMPLE = OpenApiExample(
    "comment.created",
    {
        "category": "social",
        "priority": "normal",
        "channels": ["in_app", "email"],
        "required_channels": [],
        "templates": {
            "in_app": {
                "en": {
                    "title": "{{ actor }} commented",
                    "body": "{{ comment }}",
                    "url": "/posts/{{ post_id }}",
                }
            },
            "email": {
                "en": {"subject": "New comment", "text": "…", "html": "…"},
                "pt-BR": {"subject": "Novo comentário", "text": "…"},
            },
        },
        "digest": {"window_seconds": 300, "key": "{{ post_id }}"},
    },
    request_only=True,
)
PREFERENCES_EXAMPLE = OpenApiExample(
    "Preferences",
    {
        "channels": {"sms": False},
        "categories": {"social": {"email": False}},
        "types": {"comment.created": {"email": True}},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "daily_caps": {"email": 5},
    },
)


class EventsView(APIView):
    """`POST /api/v1/events` for WSGI deployments and the OpenAPI schema.

    Under ASGI (production: the Procfile's uvicorn) this view never runs:
    notifications/api/intake.py answers the request before Django's request
    cycle, through the same service functions (event_parse, backpressure,
    events_accept_parsed). A change to what the endpoint does goes there too.
    """

    @extend_schema(
        request=s.EventRequest,
        responses={202: s.EventAccepted, **problems(409, 422, 503)},
        parameters=[IDEMPOTENCY_KEY],
        examples=[EVENT_EXAMPLE, ACCEPTED_EXAMPLE],
        summary="Send an event",
        description="The event is durable once answered 202. Only `type` and `recipients`"
        " are required; unknown recipients are created on the fly. At most 1,000 explicit"
        " recipients (a topic may hold any number) and 64 KiB of `data`.",
    )
    def post(self, request):
        accepted = events.event_accept(
            api_key_id=request.user.api_key_id,
            body=request_json(request),
            header_idempotency_key=request.headers.get("Idempotency-Key"),
            screen=backpressure.events_refusals,
        )
        return Response(accepted.as_response(), status=status.HTTP_202_ACCEPTED)


class EventsBatchView(APIView):
    """`POST /api/v1/events/batch`; under ASGI the intake answers it (see EventsView)."""

    def rate_cost(self, request) -> int:
        """One token per event of the batch (read by ApiKeyRateThrottle)."""
        return len(events.batch_bodies(request_json(request)))

    @extend_schema(
        request=s.BatchRequest,
        responses={207: s.BatchResults, **problems(422, 503)},
        examples=[BATCH_EXAMPLE, BATCH_RESULTS_EXAMPLE],
        summary="Send up to 1,000 events",
        description="Items are independent: each result is `{id, status}` or a problem object.",
    )
    def post(self, request):
        items = events.batch_bodies(request_json(request))
        results = events.events_accept_batch(
            api_key_id=request.user.api_key_id, bodies=items, screen=backpressure.events_refusals
        )
        payload = [
            problem_from_error(result) if isinstance(result, ClarionError) else result.as_response()
            for result in results
        ]
        return Response({"results": payload}, status=207)


class EventDetailView(APIView):
    @extend_schema(
        parameters=[EVENT_ID],
        responses={200: s.EventDetail, **problems(404)},
        summary="An event's status and delivery counts",
    )
    def get(self, request, event_id: str):
        event = event_get(event_id=event_id)
        if event is None:
            raise NotFound("No such event.")
        counts, reasons = event_delivery_counts(event_id=event_id)
        return Response({**s.event_json(event, counts), "delivery_reasons": reasons})

    @extend_schema(
        parameters=[EVENT_ID],
        responses={204: None, **problems(404, 409)},
        summary="Cancel a scheduled event",
        description="Only an event whose `send_at` has not come; 409 once fan-out has begun.",
    )
    def delete(self, request, event_id: str):
        if event_get(event_id=event_id) is None:
            raise NotFound("No such event.")
        events.event_cancel(event_id=event_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        request=s.ProfileRequest,
        responses={200: s.RecipientProfile, 201: s.RecipientProfile, **problems(422)},
        examples=[PROFILE_EXAMPLE],
        summary="Create or replace a recipient's profile",
    )
    def put(self, request, external_id: str):
        recipient, created = recipients.recipient_put(
            external_id=external_id, body=request_json(request)
        )
        return Response(
            recipients.recipient_json(recipient),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        responses={200: s.RecipientProfile, **problems(404, 422)}, summary="A recipient's profile"
    )
    def get(self, request, external_id: str):
        return Response(
            recipients.recipient_json(recipients.recipient_get(external_id=external_id))
        )

    @extend_schema(
        responses={204: None, **problems(404, 422)},
        summary="Erase a recipient and its personal data",
    )
    def delete(self, request, external_id: str):
        recipients.recipient_erase(external_id=external_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientExportView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        responses={200: s.RecipientExport, **problems(404, 422)},
        summary="Everything stored about a recipient",
    )
    def get(self, request, external_id: str):
        return Response(recipients.recipient_export(external_id=external_id))


class RecipientTokenView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        request=None,
        responses={200: s.RecipientToken, **problems(422)},
        summary="A signed token for the recipient's browser",
        description="For the inbox API (`Authorization: Recipient <token>`) and the websocket"
        " (`?token=`). The recipient is created if unknown.",
    )
    def post(self, request, external_id: str):
        recipients.check_external_id(external_id)
        recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
        token = recipient_token_issue(recipient_id=recipient.id)
        return Response({"token": token.token, "expires_at": token.expires_at})


class RecipientTokensView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        request=None,
        responses={204: None, **problems(404, 422)},
        summary="Revoke every token issued so far",
    )
    def delete(self, request, external_id: str):
        recipients.recipient_tokens_revoke(external_id=external_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TopicSubscribersView(CheckedPathView):
    path_checks = {"key": check_topic_key}

    @extend_schema(
        request=s.SubscribersRequest,
        responses={200: s.SubscribersChanged, **problems(422)},
        examples=[
            OpenApiExample(
                "Subscribers",
                {"add": ["u1", "u2"], "remove": ["u3"]},
                request_only=True,
            )
        ],
        summary="Add and remove subscribers",
    )
    def put(self, request, key: str):
        return Response(topics.topic_subscribers_update(key=key, body=request_json(request)))

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str, description="`next_cursor` of the previous page."),
            OpenApiParameter("limit", int, description="1 to 1000; 100 by default."),
        ],
        operation_id="topics_subscribers_list",
        responses={200: s.SubscribersPage, **problems(404, 422)},
        summary="Subscribers, a page at a time",
    )
    def get(self, request, key: str):
        limit = int_param(request, "limit", default=100, maximum=1000)
        cursor = request.query_params.get("cursor") or "0"
        if not cursor.isdigit() or len(cursor) > 19:
            raise ClarionError(
                "Invalid cursor.", errors={"cursor": ["Invalid cursor."]}, status=400
            )
        rows, more = topics.topic_subscribers_page(key=key, after=int(cursor), limit=limit)
        return Response(
            {
                "results": [external_id for _, external_id in rows],
                "next_cursor": str(rows[-1][0]) if more and rows else None,
            }
        )


class NotificationTypesView(APIView):
    @extend_schema(
        operation_id="notification_types_list",
        responses={200: s.NotificationTypeList},
        summary="All notification types",
    )
    def get(self, request):
        return Response(
            {"results": [s.type_json(t) for t in NotificationType.objects.order_by("key")]}
        )


class NotificationTypeView(CheckedPathView):
    path_checks = {"key": check_type_key}

    @extend_schema(
        request=s.NotificationTypeRequest,
        responses={200: s.NotificationTypeOut, 201: s.NotificationTypeOut, **problems(422)},
        examples=[TYPE_EXAMPLE],
        summary="Define a notification type",
    )
    def put(self, request, key: str):
        notification_type, created = types.notification_type_put(
            key=key, body=request_json(request)
        )
        return Response(
            s.type_json(notification_type),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        responses={200: s.NotificationTypeOut, **problems(404, 422)},
        summary="A notification type",
    )
    def get(self, request, key: str):
        notification_type = NotificationType.objects.filter(key=key).first()
        if notification_type is None:
            raise NotFound(f"No notification type {key!r}.")
        return Response(s.type_json(notification_type))

    @extend_schema(
        responses={204: None, **problems(404, 422)}, summary="Retire a notification type"
    )
    def delete(self, request, key: str):
        types.notification_type_retire(key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientPreferencesView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        responses={200: s.Preferences, **problems(404, 422)}, summary="A recipient's preferences"
    )
    def get(self, request, external_id: str):
        return Response(
            preferences_get(recipient_id=recipients.recipient_get(external_id=external_id).id)
        )

    @extend_schema(
        request=s.Preferences,
        responses={200: s.Preferences, **problems(422)},
        examples=[PREFERENCES_EXAMPLE],
        summary="Replace a recipient's preferences",
    )
    def put(self, request, external_id: str):
        recipients.check_external_id(external_id)
        recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
        return Response(preferences_put(recipient_id=recipient.id, body=request_json(request)))
