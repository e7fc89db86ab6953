"""`GET /api/v1/deliveries` and `POST /api/v1/deliveries/replay`: thin; the
work is in notifications.services.deliveries."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.api.parsers import int_param, request_json
from notifications.services import deliveries


class DeliveriesView(APIView):
    @extend_schema(
        summary="Deliveries, newest first, with their attempts",
        parameters=[
            OpenApiParameter("event", str),
            OpenApiParameter("recipient", str),
            OpenApiParameter("channel", str),
            OpenApiParameter("status", str),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
    )
    def get(self, request):
        where = deliveries.delivery_filter_parse(request.query_params)
        limit = int_param(request, "limit", default=100, maximum=deliveries.MAX_LIMIT)
        results, next_cursor = deliveries.deliveries_page(
            where=where, cursor=request.query_params.get("cursor") or None, limit=limit
        )
        return Response({"results": results, "next_cursor": next_cursor})


class DeliveriesReplayView(APIView):
    @extend_schema(summary="Queue failed or dead deliveries again", responses={202: dict})
    def post(self, request):
        selection = deliveries.replay_selection_parse(request_json(request))
        replayed = deliveries.deliveries_replay(selection)
        return Response({"replayed": replayed}, status=status.HTTP_202_ACCEPTED)
