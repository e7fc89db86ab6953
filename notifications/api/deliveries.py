"""`GET /api/v1/deliveries` and `POST /api/v1/deliveries/replay`: thin; the
work is in notifications.services.deliveries."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.choices import EXTERNAL_CHANNELS, DeliveryStatus
from notifications.api import serializers as s
from notifications.api.parsers import int_param, request_json
from notifications.api.schema import problems
from notifications.services import deliveries


class DeliveriesView(APIView):
    @extend_schema(
        operation_id="deliveries_list",
        summary="Deliveries, newest first, with their attempts",
        parameters=[
            OpenApiParameter("event", OpenApiTypes.UUID, description="An event id."),
            OpenApiParameter("recipient", str, description="A recipient's external id."),
            OpenApiParameter("channel", str, enum=list(EXTERNAL_CHANNELS)),
            OpenApiParameter("status", str, enum=list(DeliveryStatus.values)),
            OpenApiParameter("cursor", str, description="`next_cursor` of the previous page."),
            OpenApiParameter("limit", int, description="1 to 500; 100 by default."),
        ],
        responses={200: s.DeliveryPage},
    )
    def get(self, request):
        where = deliveries.delivery_filter_parse(request.query_params)
        limit = int_param(request, "limit", default=100, maximum=deliveries.MAX_LIMIT)
        results, next_cursor = deliveries.deliveries_page(
            where=where, cursor=request.query_params.get("cursor") or None, limit=limit
        )
        return Response({"results": results, "next_cursor": next_cursor})


class DeliveriesReplayView(APIView):
    @extend_schema(
        request=s.ReplayRequest,
        responses={202: s.Replayed, **problems(422)},
        examples=[
            OpenApiExample("By id", {"ids": [101, 102]}, request_only=True),
            OpenApiExample("Dead email", {"status": "dead", "channel": "email"}, request_only=True),
            OpenApiExample("Replayed", {"replayed": 2}, response_only=True, status_codes=["202"]),
        ],
        summary="Queue failed or dead deliveries again",
        description="A sent, delivered or opted-out delivery is never replayed.",
    )
    def post(self, request):
        selection = deliveries.replay_selection_parse(request_json(request))
        replayed = deliveries.deliveries_replay(selection)
        return Response({"replayed": replayed}, status=status.HTTP_202_ACCEPTED)
