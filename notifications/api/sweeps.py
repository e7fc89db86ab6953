"""`GET /api/v1/sweeps`: recent runs of the scheduled sweeps."""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import ClarionError
from notifications.api import serializers as s
from notifications.api.parsers import int_param
from notifications.services.sweep_runs import PAGE_MAX, sweep_runs_list

SWEEP_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


class SweepsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, required=False, description="Only this sweep's runs."),
            OpenApiParameter("limit", int, required=False, description="1 to 500; 100 by default."),
        ],
        operation_id="sweeps_list",
        responses={200: s.SweepRunList},
        summary="Recent sweep runs, newest first",
    )
    def get(self, request):
        limit = int_param(request, "limit", default=100, maximum=PAGE_MAX)
        name = request.query_params.get("name") or None
        if name is not None and not SWEEP_NAME_RE.match(name):
            raise ClarionError(
                "name must be a sweep's name (1 to 64 characters, no control characters).",
                errors={"name": ["Must be 1 to 64 characters without control characters."]},
                status=400,
            )
        runs = sweep_runs_list(name=name, limit=limit)
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
