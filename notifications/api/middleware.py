"""Everything under /api/ answers in problem+json, in every mode.

Django renders some errors before any view runs, and with DEBUG on it
renders them as HTML debug pages (an unknown URL, a DisallowedHost, an
unhandled exception). API clients parse JSON, so this outermost middleware
rewrites any non-JSON error answer under /api/ into a problem of the same
status; the debug page's details stay in the server log.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from notifications.api.problems import PROBLEM_CONTENT_TYPE, problem_body

API_PREFIX = "/api/"
DETAILS = {
    400: "Bad request.",
    403: "Forbidden.",
    404: "No such resource.",
    405: "Method not allowed.",
    500: "The server failed; the error is logged.",
}


class ApiProblemsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or not request.path.startswith(API_PREFIX):
            return response
        content_type = response.get("Content-Type", "")
        if content_type.startswith((PROBLEM_CONTENT_TYPE, "application/json")):
            return response
        problem = JsonResponse(
            problem_body(
                response.status_code, DETAILS.get(response.status_code, "The request failed.")
            ),
            status=response.status_code,
            content_type=PROBLEM_CONTENT_TYPE,
        )
        for header in ("Retry-After", "WWW-Authenticate", "Allow"):
            if header in response:
                problem[header] = response[header]
        return problem


@csrf_exempt  # a 404 is the answer whatever the method; CSRF would make it a 403
def api_not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """The last route under /api/: an unknown path is a problem 404 even with
    DEBUG on, where Django would answer with its HTML URL listing."""
    return JsonResponse(
        problem_body(404, DETAILS[404]), status=404, content_type=PROBLEM_CONTENT_TYPE
    )
