"""`/api/v1/recipients/{external_id}/push-tokens`: a recipient's mobile device tokens."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from notifications.api import serializers as s
from notifications.api.parsers import request_json
from notifications.api.path_ids import CheckedPathView, check_recipient_id
from notifications.api.schema import problems
from notifications.services import push_tokens


class RecipientPushTokensView(CheckedPathView):
    path_checks = {"external_id": check_recipient_id}

    @extend_schema(
        operation_id="recipients_push_tokens_list",
        responses={200: s.PushTokenList, **problems(404, 422)},
        summary="A recipient's push tokens",
    )
    def get(self, request, external_id: str):
        rows = push_tokens.push_tokens_list(external_id=external_id)
        return Response({"results": [row.as_json() for row in rows]})

    @extend_schema(
        request=s.PushTokenRequest,
        responses={200: s.PushToken, 201: s.PushToken, **problems(422)},
        summary="Register a device token",
        description="201 for a new token, 200 when it was known (its `last_seen_at` is"
        " refreshed). The recipient is created if unknown.",
    )
    def put(self, request, external_id: str):
        row, created = push_tokens.push_token_put(
            external_id=external_id, body=request_json(request)
        )
        return Response(
            row.as_json(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        request=s.PushTokenRef,
        parameters=[
            OpenApiParameter("token", str, required=False, description="Instead of a body.")
        ],
        responses={204: None, **problems(400, 404, 413, 415, 422)},
        summary="Remove a device token",
        description='`?token=`, or the body `{"token": "…"}` (OpenAPI 3.0 cannot show a'
        " DELETE body).",
    )
    def delete(self, request, external_id: str):
        token = request.query_params.get("token")
        body = {"token": token} if token is not None else request_json(request)
        push_tokens.push_token_delete(external_id=external_id, body=body)
        return Response(status=status.HTTP_204_NO_CONTENT)
