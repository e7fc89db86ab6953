"""`GET /api/v1/`: the index of the API, links to its docs and main resources.

What a developer opens first (`make run` prints it), so it answers without
credentials; a producer key, if sent, is checked as everywhere (a wrong one is
a 401) and counts against its rate limit. Links are built from the URL names,
so they follow the URLconf; a resource with path parameters is given as a URI
template (RFC 6570), e.g. `/api/v1/recipients/{external_id}`.
"""

from __future__ import annotations

from urllib.parse import unquote

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

PRODUCER = "producer"  # Authorization: Bearer <API key>
RECIPIENT = "recipient"  # Authorization: Recipient <token>, or a linked session

DOCS = {
    "swagger_ui": "docs",
    "redoc": "redoc",
    "openapi_schema": "schema",
}
# (key in the index, URL name, path parameters, who calls it, what it is)
RESOURCES = (
    ("events", "events", (), PRODUCER, "Send an event (POST) to its recipients."),
    ("events_batch", "events-batch", (), PRODUCER, "Send up to 1,000 events at once (POST)."),
    ("event", "event-detail", ("event_id",), PRODUCER, "An event and its progress."),
    ("deliveries", "deliveries", (), PRODUCER, "Deliveries by event, recipient or status."),
    ("notification_types", "notification-types", (), PRODUCER, "Types and their templates."),
    ("recipient", "recipient", ("external_id",), PRODUCER, "A recipient's profile."),
    (
        "recipient_preferences",
        "recipient-preferences",
        ("external_id",),
        PRODUCER,
        "A recipient's channel preferences.",
    ),
    (
        "topic_subscribers",
        "topic-subscribers",
        ("key",),
        PRODUCER,
        "Who follows a topic.",
    ),
    ("webhook_endpoints", "webhook-endpoints", (), PRODUCER, "Status webhooks of producers."),
    ("items", "items", (), PRODUCER, "Items that saved searches and reminders match."),
    ("sweeps", "sweeps", (), PRODUCER, "Recent runs of the scheduled sweeps."),
    ("inbox", "inbox", (), RECIPIENT, "The caller's in-app notifications."),
    ("inbox_unread_count", "inbox-unread-count", (), RECIPIENT, "The caller's unread count."),
    ("inbox_preferences", "inbox-preferences", (), RECIPIENT, "The caller's preferences."),
)
AUTH = {
    PRODUCER: "Authorization: Bearer <API key> (python manage.py create_api_key NAME)",
    RECIPIENT: "Authorization: Recipient <token> (POST /api/v1/recipients/{external_id}/token)",
}


class IndexLink(serializers.Serializer):
    href = serializers.CharField()
    caller = serializers.ChoiceField(choices=[PRODUCER, RECIPIENT])
    description = serializers.CharField()


class ApiIndex(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    docs = serializers.DictField(child=serializers.CharField())
    auth = serializers.DictField(child=serializers.CharField())
    resources = serializers.DictField(child=IndexLink())


def _href(request: Request, name: str, parameters: tuple[str, ...]) -> str:
    url = request.build_absolute_uri(reverse(name, kwargs={p: f"{{{p}}}" for p in parameters}))
    # Both quote the template's braces; the link keeps them (nothing else here is quoted).
    return unquote(url) if parameters else url


def api_index(request: Request) -> dict:
    """The index document, with absolute links for this request's host."""
    return {
        "name": settings.SPECTACULAR_SETTINGS["TITLE"],
        "version": settings.SPECTACULAR_SETTINGS["VERSION"],
        "docs": {key: request.build_absolute_uri(reverse(name)) for key, name in DOCS.items()},
        "auth": AUTH,
        "resources": {
            key: {
                "href": _href(request, name, parameters),
                "caller": caller,
                "description": description,
            }
            for key, name, parameters, caller, description in RESOURCES
        },
    }


class ApiIndexView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="api_index",
        tags=["index"],
        summary="The index of the API: its docs and main resources",
        responses={200: OpenApiResponse(ApiIndex, description="Links, absolute for this host.")},
    )
    def get(self, request):
        return Response(api_index(request))
