"""`/api/v1/webhook-endpoints`: a producer's status webhook subscriptions.
Thin views; the work is in notifications.services.webhook_endpoints."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.api.parsers import request_json
from notifications.api.schema import problems
from notifications.services import webhook_endpoints as endpoints
from notifications.services.status_webhooks import EVENT_TYPES

# For the OpenAPI schema only: the service validates (and answers problem+json).
_EVENT_TYPES = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES))
_REQUEST = inline_serializer(
    "WebhookEndpointRequest",
    {"url": serializers.URLField(), "event_types": _EVENT_TYPES},
)
_FIELDS = {
    "id": serializers.UUIDField(),
    "url": serializers.URLField(),
    "event_types": _EVENT_TYPES,
    "created_at": serializers.DateTimeField(),
}
_ENDPOINT = inline_serializer("WebhookEndpoint", _FIELDS)
_CREATED = inline_serializer(
    "WebhookEndpointCreated",
    {**_FIELDS, "secret": serializers.CharField(help_text="whsec_…, shown only here")},
)
_LIST = inline_serializer("WebhookEndpointList", {"results": type(_ENDPOINT)(many=True)})


class WebhookEndpointsView(APIView):
    @extend_schema(
        request=_REQUEST,
        responses={201: _CREATED, **problems(422)},
        examples=[
            OpenApiExample(
                "Delivery outcomes",
                {
                    "url": "https://hooks.example.com/clarion",
                    "event_types": ["delivery.sent", "delivery.failed", "delivery.dead"],
                },
                request_only=True,
            )
        ],
        summary="Subscribe an endpoint to status events",
    )
    def post(self, request):
        endpoint, secret = endpoints.webhook_endpoint_create(
            api_key_id=request.user.api_key_id, body=request_json(request)
        )
        return Response(
            endpoints.webhook_endpoint_json(endpoint, secret=secret),
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        operation_id="webhook_endpoints_list",
        responses={200: _LIST},
        summary="This API key's webhook endpoints (without their secrets)",
    )
    def get(self, request):
        rows = endpoints.webhook_endpoints_list(api_key_id=request.user.api_key_id)
        return Response({"results": [endpoints.webhook_endpoint_json(e) for e in rows]})


class WebhookEndpointView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("endpoint_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={204: None, **problems(404)},
        summary="Remove a webhook endpoint",
    )
    def delete(self, request, endpoint_id: str):
        endpoints.webhook_endpoint_delete(
            api_key_id=request.user.api_key_id, endpoint_id=endpoint_id
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
