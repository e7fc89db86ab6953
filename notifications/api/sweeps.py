"""`GET /api/v1/sweeps`: recent runs of the scheduled sweeps."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.api.parsers import int_param
from notifications.services.sweep_runs import PAGE_MAX, sweep_runs_list


class SweepsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, required=False),
            OpenApiParameter("limit", int, required=False),
        ],
        summary="Recent sweep runs, newest first",
    )
    def get(self, request):
        limit = int_param(request, "limit", default=100, maximum=PAGE_MAX)
        runs = sweep_runs_list(name=request.query_params.get("name") or None, limit=limit)
        return Response(
            {
                "results": [
                    {
                        "name": run.name,
                        "started_at": run.started_at,
                        "duration_ms": run.duration_ms,
                        "rows_examined": run.rows_examined,
                        "events_produced": run.events_produced,
                        "status": run.status,
                        "error": run.error,
                    }
                    for run in runs
                ]
            }
        )
