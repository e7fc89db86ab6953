"""Web push subscriptions: registered by the producer for a recipient, or by
the recipient's own browser (the bell, with its `Recipient` token), and the
VAPID public key that browser subscribes with."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from common.errors import NotFound
from notifications.api.inbox import InboxView
from notifications.api.parsers import request_json
from notifications.api.path_ids import CheckedPathView, check_recipient_id
from notifications.api.schema import problems
from notifications.models import Recipient
from notifications.services import recipients
from notifications.services import web_push_subscriptions as subscriptions


class SubscriptionKeys(serializers.Serializer):
    p256dh = serializers.CharField(
        help_text="The browser's P-256 public key (65 bytes, base64url)."
    )
    auth = serializers.CharField(help_text="The authentication secret (16 bytes, base64url).")


class SubscriptionRequest(serializers.Serializer):
    """The schema only (the service validates): `PushSubscription.toJSON()`."""

    endpoint = serializers.URLField(max_length=2048, help_text="The push service URL (https).")
    keys = SubscriptionKeys()
    user_agent = serializers.CharField(required=False, max_length=255)


class EndpointRequest(serializers.Serializer):
    endpoint = serializers.CharField(max_length=2048)


class Subscription(serializers.Serializer):
    endpoint = serializers.CharField()
    user_agent = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


class SubscriptionList(serializers.Serializer):
    results = Subscription(many=True)


class PublicKey(serializers.Serializer):
    public_key = serializers.CharField(help_text="The VAPID key, for `applicationServerKey`.")


def _put(recipient_id: int, request) -> Response:
    row, created = subscriptions.web_push_subscription_upsert(
        recipient_id=recipient_id,
        subscription=subscriptions.subscription_parse(request_json(request)),
    )
    return Response(
        row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
    )


def _delete(recipient_id: int | None, request) -> Response:
    endpoint = subscriptions.endpoint_parse(request_json(request))
    if recipient_id is not None:
        subscriptions.web_push_subscription_delete(recipient_id=recipient_id, endpoint=endpoint)
    return Response(status=status.HTTP_204_NO_CONTENT)


def _list(recipient_id: int) -> Response:
    rows = subscriptions.web_push_subscriptions_list(recipient_id=recipient_id)
    return Response({"results": [row.as_json() for row in rows]})


class RecipientWebPushSubscriptionsView(CheckedPathView):
    """`/api/v1/recipients/{external_id}/web-push-subscriptions` (producer key)."""

    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        request=SubscriptionRequest,
        responses={200: Subscription, 201: Subscription, **problems(422)},
        summary="Register a browser push subscription",
    )
    def put(self, request, external_id: str):
        recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
        return _put(recipient.id, request)

    @extend_schema(
        request=EndpointRequest,
        responses={204: None, **problems(400, 413, 415, 422)},
        summary="Remove a push subscription",
        description='Body: `{"endpoint": "https://…"}` (OpenAPI 3.0 cannot show a DELETE body).',
    )
    def delete(self, request, external_id: str):
        recipient_id = (
            Recipient.objects.filter(external_id=external_id).values_list("id", flat=True).first()
        )
        return _delete(recipient_id, request)

    @extend_schema(
        operation_id="recipients_web_push_subscriptions_list",
        responses={200: SubscriptionList, **problems(404, 422)},
        summary="A recipient's browser push subscriptions",
    )
    def get(self, request, external_id: str):
        return _list(recipients.recipient_get(external_id=external_id).id)


class InboxWebPushSubscriptionsView(InboxView):
    """`/api/v1/inbox/web-push-subscriptions`: the recipient's own browser."""

    @extend_schema(
        request=SubscriptionRequest,
        responses={200: Subscription, 201: Subscription, **problems(422)},
        summary="Register this browser's push subscription",
    )
    def put(self, request):
        return _put(self.recipient_id, request)

    @extend_schema(
        request=EndpointRequest,
        responses={204: None, **problems(400, 413, 415, 422)},
        summary="Remove this browser's push subscription",
        description='Body: `{"endpoint": "https://…"}` (OpenAPI 3.0 cannot show a DELETE body).',
    )
    def delete(self, request):
        return _delete(self.recipient_id, request)

    @extend_schema(
        operation_id="inbox_web_push_subscriptions_list",
        responses=SubscriptionList,
        summary="The recipient's own browser push subscriptions",
    )
    def get(self, request):
        return _list(self.recipient_id)


class InboxWebPushKeyView(InboxView):
    """`/api/v1/inbox/web-push-key`: the `applicationServerKey` to subscribe with."""

    @extend_schema(
        responses={200: PublicKey, **problems(404)},
        summary="The VAPID public key browsers subscribe with",
    )
    def get(self, request):
        key = subscriptions.web_push_public_key()
        if not key:
            raise NotFound("Web push is not configured (CLARION_VAPID_PUBLIC_KEY is empty).")
        return Response({"public_key": key})
