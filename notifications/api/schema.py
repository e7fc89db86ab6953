"""The OpenAPI schema's shared parts: the security schemes of the API's two
kinds of caller, and its problem+json answers (RFC 9457).

REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS is `ApiSchema` below, and the API views
import `problems` from here: either registers the authentication extensions
before drf-spectacular reads any view. The
postprocessing hook (SPECTACULAR_SETTINGS) adds to every operation the answers
it can give whatever its view does: 401 without credentials, 429 from the
producer rate limit, and for a request body 400/413/415.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc
from drf_spectacular.utils import OpenApiExample, OpenApiResponse

from notifications.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from notifications.api.serializers import Problem


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema (DEFAULT_SCHEMA_CLASS), except that an
    operation's description comes from extend_schema or the method's docstring,
    never from the view class's: those are written for the code's readers."""

    def get_description(self) -> str:
        method = getattr(self.view, getattr(self.view, "action", self.method.lower()), None)
        return get_doc(method)


PRODUCER_SCHEME = "Bearer"
RECIPIENT_SCHEME = "Recipient"
SESSION_SCHEME = "Session"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "notifications.api.auth.ApiKeyAuthentication"
    name = PRODUCER_SCHEME

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A producer API key (`clk_…`), made in the admin or by"
            " `python manage.py create_api_key NAME`.",
        }


class RecipientTokenScheme(OpenApiAuthenticationExtension):
    target_class = "notifications.api.inbox.RecipientTokenAuthentication"
    name = RECIPIENT_SCHEME

    def get_security_definition(self, auto_schema) -> dict:
        # `Recipient` is no registered HTTP scheme, so OpenAPI can say it only as
        # an API key in the Authorization header, prefix included.
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Recipient <token>`, the token from POST"
            " /api/v1/recipients/{external_id}/token. Enter the whole value,"
            " `Recipient ` included.",
        }


class LinkedSessionScheme(OpenApiAuthenticationExtension):
    target_class = "notifications.api.inbox.LinkedSessionAuthentication"
    name = SESSION_SCHEME

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "A Django session whose user is linked to a recipient"
            " (unsafe methods need the CSRF token too).",
        }


DESCRIPTIONS = {
    400: "Malformed JSON, or a bad query parameter or cursor.",
    401: "No credentials, or invalid, expired or revoked ones.",
    404: "No such resource (or not the caller's).",
    409: "Conflicts with the current state: an idempotency key reused with another"
    " body, an event no longer scheduled, a limit of rows reached.",
    413: "The body or a part of it is larger than the limits.",
    415: "The body is not `application/json`.",
    422: "Invalid fields; `errors` names each.",
    429: "Rate limit or backpressure; retry after `Retry-After` seconds.",
    503: "The database did not answer in time; nothing was stored. Retry.",
}
EXAMPLE_DETAILS = {
    400: ("Malformed JSON: unexpected end of data: line 1 column 10 (char 9)", None),
    401: ("Authentication credentials were not provided.", None),
    404: ("No such resource.", None),
    409: ("The idempotency key was used with a different body.", None),
    413: ("The request body is larger than this server accepts.", None),
    415: ('Unsupported media type "text/plain" in request.', None),
    422: (
        "The request has invalid fields.",
        {"recipients[1]": ["Not a valid recipient id."], "data": ["Must be a JSON object."]},
    ),
    429: ("This API key's rate limit is used up; retry in 2 s.", None),
    503: ("The database did not answer in time; nothing was stored. Retry shortly.", None),
}


def problem_example(code: int) -> dict:
    detail, errors = EXAMPLE_DETAILS[code]
    return problem_body(code, detail, errors=errors)


def problems(*codes: int) -> dict:
    """extend_schema `responses` entries: problem+json answers with these codes."""
    return {
        (code, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            Problem,
            description=DESCRIPTIONS[code],
            examples=[OpenApiExample(f"problem {code}", problem_example(code))],
        )
        for code in codes
    }


def _problem_response(code: int) -> dict:
    return {
        "description": DESCRIPTIONS[code],
        "content": {
            PROBLEM_CONTENT_TYPE: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": {f"Problem{code}": {"value": problem_example(code)}},
            }
        },
    }


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


def add_common_problems(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: the problem answers any operation can give."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            schemes = {name for option in operation.get("security", []) for name in option}
            codes = []
            if schemes:
                codes.append(401)
            if PRODUCER_SCHEME in schemes:
                codes.append(429)
            if "requestBody" in operation:
                codes += [400, 413, 415]
            elif any(p.get("in") == "query" for p in operation.get("parameters", [])):
                codes.append(400)
            for code in codes:
                responses.setdefault(str(code), _problem_response(code))
            for code in ("429", "503"):
                if code in responses:
                    responses[code].setdefault("headers", RETRY_AFTER)
            operation["responses"] = dict(sorted(responses.items()))
    return result
