"""RFC 9457 problem+json for every error under /api/."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from common.errors import ClarionError

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem_body(
    status_code: int, detail: str, *, errors: dict | None = None, title: str | None = None
) -> dict:
    body = {
        "type": "about:blank",
        "title": title or TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return body


def problem_from_error(error: ClarionError) -> dict:
    body = problem_body(error.status, error.detail, errors=error.errors, title=error.title)
    return {**body, **error.extra}


def problem_response(
    status_code: int, detail: str, *, errors: dict | None = None, headers: dict | None = None
) -> Response:
    response = Response(
        problem_body(status_code, detail, errors=errors), status=status_code, headers=headers
    )
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def _field_errors(data) -> dict[str, list[str]]:
    if isinstance(data, dict):
        out: dict[str, list[str]] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                for sub, messages in _field_errors(value).items():
                    out[f"{key}.{sub}"] = messages
            elif isinstance(value, list):
                out[str(key)] = [str(v) for v in value]
            else:
                out[str(key)] = [str(value)]
        return out
    if isinstance(data, list):
        return {"non_field_errors": [str(v) for v in data]}
    return {"non_field_errors": [str(data)]}


def problem_exception_handler(exc, context):
    """DRF's exception handler, speaking problem+json."""
    if isinstance(exc, ClarionError):
        response = Response(problem_from_error(exc), status=exc.status, headers=exc.headers or None)
        response.content_type = PROBLEM_CONTENT_TYPE
        return response
    if isinstance(exc, Http404):
        return problem_response(404, "Not found.")
    if isinstance(exc, RequestDataTooBig):
        return problem_response(413, "The request body is larger than this server accepts.")
    if isinstance(exc, exceptions.ValidationError):
        return problem_response(
            422, "The request has invalid fields.", errors=_field_errors(exc.detail)
        )
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's 500 handler (also problem+json under /api/)
    detail = (
        exc.detail
        if isinstance(getattr(exc, "detail", None), str)
        else str(getattr(exc, "detail", exc))
    )
    headers = {}
    for header in ("Retry-After", "WWW-Authenticate", "Allow"):
        if header in response:
            headers[header] = response[header]
    if isinstance(exc, exceptions.Throttled) and "Retry-After" not in headers and exc.wait:
        headers["Retry-After"] = str(int(exc.wait))
    return problem_response(response.status_code, detail, headers=headers)


def django_problem_view(status_code: int):
    """Django's handler404/handler500 etc.: problem+json under /api/, HTML elsewhere."""
    fallback = {
        400: defaults.bad_request,
        403: defaults.permission_denied,
        404: defaults.page_not_found,
        500: defaults.server_error,
    }[status_code]

    def view(request, exception=None):
        if request.path.startswith("/api/"):
            detail = {
                400: "Bad request.",
                403: "Forbidden.",
                404: "No such resource.",
                500: "The server failed; the error is logged.",
            }[status_code]
            return JsonResponse(
                problem_body(status_code, detail),
                status=status_code,
                content_type=PROBLEM_CONTENT_TYPE,
            )
        if status_code == 500:
            return fallback(request)
        return fallback(request, exception)

    return view
