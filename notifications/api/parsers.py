"""A strict JSON parser: size-limited, UTF-8 only, no NaN/Infinity, no NUL
characters (PostgreSQL's jsonb refuses them), depth-safe."""

from __future__ import annotations

import orjson
from django.conf import settings
from django.http import QueryDict
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from common.errors import ClarionError, TooLarge


def _contains_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(v) for v in value)
    return False


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = 0
        if request is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
        if length > limit:
            raise TooLarge(f"The request body is larger than {limit} bytes.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise TooLarge(f"The request body is larger than {limit} bytes.")
        try:
            return json_loads_strict(raw)
        except MalformedBody as exc:
            raise ParseError(exc.detail) from exc


class MalformedBody(ClarionError):
    status = 400
    title = "Bad request"


def json_loads_strict(raw: bytes) -> object:
    """Parse a request body: raises MalformedBody for anything but strict JSON."""
    if not raw:
        raise MalformedBody("The request body is empty; a JSON document is expected.")
    try:
        # orjson: strict RFC 8259 (no NaN/Infinity), UTF-8 checked, nesting capped.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"Malformed JSON: {exc}") from exc
    if b"\\u0000" in raw and _contains_nul(data):
        raise MalformedBody("Strings must not contain the NUL character (\\u0000).")
    return data


def request_json(request):
    """The parsed JSON body; DRF hands an empty body over as an empty QueryDict."""
    data = request.data
    if request.stream is None or isinstance(data, QueryDict):
        raise ParseError("The request body is empty; a JSON document is expected.")
    return data


def int_param(request, name: str, *, default: int, maximum: int) -> int:
    """A positive integer query parameter, at most `maximum` (400 otherwise)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only, and few enough that int() cannot refuse them (Python
    # caps int() at 4,300 digits; "١٢" is a digit string too).
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not 1 <= int(raw) <= maximum:
        raise ClarionError(
            f"{name} must be an integer from 1 to {maximum}.",
            errors={name: [f"Must be 1 to {maximum}."]},
            status=400,
        )
    return int(raw)
