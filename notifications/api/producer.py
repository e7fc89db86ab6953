"""Producer API views: thin; the work is in notifications.services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
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
from notifications.models import NotificationType, Recipient
from notifications.selectors import event_delivery_counts, event_get
from notifications.services import backpressure, events, recipients, topics, types
from notifications.services.tokens import recipient_token_issue
from preferences.services import preferences_get, preferences_put


class EventsView(APIView):
    """`POST /api/v1/events` for WSGI deployments and the OpenAPI schema.

    Under ASGI (production: the Procfile's uvicorn) this view never runs:
    notifications/api/intake.py answers the request before Django's request
    cycle, through the same service functions (event_parse, backpressure,
    events_accept_parsed). A change to what the endpoint does goes there too.
    """

    @extend_schema(
        request=s.EventRequest, responses={202: s.EventAccepted}, summary="Send an event"
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

    @extend_schema(request=s.BatchRequest, responses={207: None}, summary="Send up to 1,000 events")
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
    @extend_schema(summary="An event's status and delivery counts")
    def get(self, request, event_id: str):
        event = event_get(event_id=event_id)
        if event is None:
            raise NotFound("No such event.")
        counts, reasons = event_delivery_counts(event_id=event_id)
        return Response({**s.event_json(event, counts), "delivery_reasons": reasons})

    @extend_schema(summary="Cancel a scheduled event", responses={204: None})
    def delete(self, request, event_id: str):
        if event_get(event_id=event_id) is None:
            raise NotFound("No such event.")
        events.event_cancel(event_id=event_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(request=s.ProfileRequest, summary="Create or replace a recipient's profile")
    def put(self, request, external_id: str):
        recipient, created = recipients.recipient_put(
            external_id=external_id, body=request_json(request)
        )
        return Response(
            recipients.recipient_json(recipient),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(summary="A recipient's profile")
    def get(self, request, external_id: str):
        return Response(
            recipients.recipient_json(recipients.recipient_get(external_id=external_id))
        )

    @extend_schema(summary="Erase a recipient and its personal data", responses={204: None})
    def delete(self, request, external_id: str):
        recipients.recipient_erase(external_id=external_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientExportView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(summary="Everything stored about a recipient")
    def get(self, request, external_id: str):
        return Response(recipients.recipient_export(external_id=external_id))


class RecipientTokenView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(request=None, summary="A signed token for the recipient's browser")
    def post(self, request, external_id: str):
        recipients.check_external_id(external_id)
        recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
        token = recipient_token_issue(recipient_id=recipient.id)
        return Response({"token": token.token, "expires_at": token.expires_at})


class RecipientTokensView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(request=None, responses={204: None}, summary="Revoke every token issued so far")
    def delete(self, request, external_id: str):
        recipients.recipient_tokens_revoke(external_id=external_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TopicSubscribersView(CheckedPathView):
    path_checks = {"key": check_topic_key}

    @extend_schema(request=s.SubscribersRequest, summary="Add and remove subscribers")
    def put(self, request, key: str):
        return Response(topics.topic_subscribers_update(key=key, body=request_json(request)))

    @extend_schema(
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
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
    @extend_schema(summary="All notification types")
    def get(self, request):
        return Response(
            {"results": [s.type_json(t) for t in NotificationType.objects.order_by("key")]}
        )


class NotificationTypeView(CheckedPathView):
    path_checks = {"key": check_type_key}

    @extend_schema(request=s.NotificationTypeRequest, summary="Define a notification type")
    def put(self, request, key: str):
        notification_type, created = types.notification_type_put(
            key=key, body=request_json(request)
        )
        return Response(
            s.type_json(notification_type),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(summary="A notification type")
    def get(self, request, key: str):
        notification_type = NotificationType.objects.filter(key=key).first()
        if notification_type is None:
            raise NotFound(f"No notification type {key!r}.")
        return Response(s.type_json(notification_type))

    @extend_schema(summary="Retire a notification type", responses={204: None})
    def delete(self, request, key: str):
        types.notification_type_retire(key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipientPreferencesView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(summary="A recipient's preferences")
    def get(self, request, external_id: str):
        return Response(
            preferences_get(recipient_id=recipients.recipient_get(external_id=external_id).id)
        )

    @extend_schema(request=None, summary="Replace a recipient's preferences")
    def put(self, request, external_id: str):
        recipients.check_external_id(external_id)
        recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
        return Response(preferences_put(recipient_id=recipient.id, body=request_json(request)))
