"""Inbox API views, as the recipient (token or linked session)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import authentication, exceptions
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import ClarionError
from notifications.api import serializers as s
from notifications.api.parsers import int_param, request_json
from notifications.api.schema import problems
from notifications.models import Recipient
from notifications.services import inbox
from notifications.services.tokens import recipient_token_verify
from preferences.services import preferences_get, preferences_put


class RecipientPrincipal:
    is_authenticated = True

    def __init__(self, recipient_id: int):
        self.recipient_id = recipient_id


class RecipientTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "recipient":
            return None
        claims = recipient_token_verify(token.strip())
        if claims is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked recipient token.")
        return RecipientPrincipal(claims.recipient_id), token

    def authenticate_header(self, request) -> str:
        return 'Recipient realm="clarion"'


class LinkedSessionAuthentication(authentication.SessionAuthentication):
    """A Django session whose user is linked to a recipient."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        recipient_id = Recipient.objects.filter(user=user).values_list("id", flat=True).first()
        if recipient_id is None:
            return None
        return RecipientPrincipal(recipient_id), None


class InboxView(APIView):
    authentication_classes = [RecipientTokenAuthentication, LinkedSessionAuthentication]

    @property
    def recipient_id(self) -> int:
        return self.request.user.recipient_id


class InboxListView(InboxView):
    @extend_schema(
        operation_id="inbox_list",
        parameters=[
            OpenApiParameter("limit", int, description="1 to 100; 20 by default."),
            OpenApiParameter("cursor", str, description="`next_cursor` of the previous page."),
            OpenApiParameter(
                "status",
                str,
                enum=["unread", "read", "archived", "all"],
                description="Without it: the live inbox, read and unread, not archived.",
            ),
        ],
        responses={200: s.InboxPage},
        summary="The recipient's notifications, newest first",
    )
    def get(self, request):
        status = request.query_params.get("status") or None
        if status not in inbox.STATUS_FILTERS:
            raise ClarionError(
                "status must be unread, read, archived or all.",
                errors={"status": ["Must be unread, read, archived or all."]},
                status=400,
            )
        limit = int_param(request, "limit", default=20, maximum=inbox.MAX_LIMIT)
        items, next_cursor = inbox.inbox_page(
            recipient_id=self.recipient_id,
            status=status,
            cursor=request.query_params.get("cursor"),
            limit=limit,
        )
        return Response({"results": items, "next_cursor": next_cursor})


class UnreadCountView(InboxView):
    @extend_schema(responses={200: s.UnreadCount}, summary="How many unread notifications")
    def get(self, request):
        return Response({"count": inbox.unread_count(recipient_id=self.recipient_id)})


class MarkView(InboxView):
    action_name = "read"

    @extend_schema(
        request=None,
        responses={200: s.InboxItem, **problems(404)},
        summary="Mark a notification read, unread or archived",
    )
    def post(self, request, notification_id: str):
        return Response(
            inbox.notification_mark(
                recipient_id=self.recipient_id,
                notification_id=notification_id,
                action=self.action_name,
            )
        )


class ReadAllView(InboxView):
    @extend_schema(request=None, responses={200: s.ReadAll}, summary="Mark every notification read")
    def post(self, request):
        return Response({"updated": inbox.inbox_read_all(recipient_id=self.recipient_id)})


class InboxPreferencesView(InboxView):
    @extend_schema(responses={200: s.Preferences}, summary="The recipient's own preferences")
    def get(self, request):
        return Response(preferences_get(recipient_id=self.recipient_id))

    @extend_schema(
        request=s.Preferences,
        responses={200: s.Preferences, **problems(422)},
        summary="Replace the recipient's own preferences",
    )
    def put(self, request):
        return Response(preferences_put(recipient_id=self.recipient_id, body=request_json(request)))
