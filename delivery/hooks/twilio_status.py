"""Twilio's status callbacks: `POST /hooks/twilio/status?delivery=N`.

Twilio posts a form (`MessageSid`, `MessageStatus`, `ErrorCode`, …) to the
`StatusCallback` each message was sent with (delivery/providers/twilio.py),
signed in `X-Twilio-Signature` with the account's auth token over the URL
and the form. `delivered` moves the delivery forward; `undelivered` and
`failed` (the carrier refused it after Twilio accepted it) fail it; the
interim statuses (queued, sending, sent, …) change nothing.

The answer is 204 whatever the status did, 401 for a missing or wrong
signature (nothing is read or changed before it is checked), 404 for a
delivery that is not an SMS of ours, 409 for a callback about another
message than the one the delivery holds. Hostile input is a 4xx, never a 500.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.encoding import escape_uri_path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from common.choices import Channel, DeliveryStatus
from delivery.providers.registry import providers_for
from delivery.providers.twilio import TwilioProvider
from notifications.models import Delivery
from notifications.services.delivery_status import deliveries_advance

log = logging.getLogger("clarion.delivery.hooks.twilio")

SIGNATURE_HEADER = "X-Twilio-Signature"
DELIVERED_STATUSES = frozenset({"delivered"})
FAILED_STATUSES = frozenset({"undelivered", "failed"})
_DELIVERY_ID = re.compile(r"[0-9]{1,18}")  # within bigint
_MESSAGE_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")  # SM… (SMS), MM… (MMS)
_ERROR_CODE = re.compile(r"[0-9]{1,10}")


@csrf_exempt  # Twilio cannot carry a CSRF token; the signature authenticates the call
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    try:
        params = request.POST
    except (SuspiciousOperation, MultiPartParserError, OSError):  # too big, too many fields
        return _answer(400, "The form could not be read.")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature or not signed_by_twilio(public_url(request), params, signature):
        log.warning(
            "twilio status callback with a missing or bad signature (delivery %r)",
            request.GET.get("delivery", "-")[:32],
        )
        return _answer(401, "Missing or bad X-Twilio-Signature.")

    raw_delivery = request.GET.get("delivery", "")
    if raw_delivery and not _DELIVERY_ID.fullmatch(raw_delivery):
        return _answer(400, "delivery must be a delivery id.")
    message_sid = params.get("MessageSid", "")
    if not _MESSAGE_SID.fullmatch(message_sid):
        return _answer(400, "MessageSid is missing or malformed.")
    status = params.get("MessageStatus", "")
    error_code = params.get("ErrorCode", "")
    return _answer(
        *twilio_status_apply(
            delivery_id=int(raw_delivery) if raw_delivery else None,
            message_sid=message_sid,
            status=status,
            error_code=error_code if _ERROR_CODE.fullmatch(error_code) else "",
        )
    )


def public_url(request: HttpRequest) -> str:
    """The URL Twilio requested, as it signed it.

    Twilio signs the URL it was given: `CLARION["PUBLIC_URL"]` + path + query
    (delivery/providers/twilio.py builds it so). Behind a proxy or a TLS
    terminator the Host, scheme and port Django sees differ from that, so
    `build_absolute_uri()` would not match; and trusting X-Forwarded-Host
    would let the caller pick the URL its signature is checked against.
    `path_info` (not `path`) so a PUBLIC_URL with a prefix that Django also
    sees as SCRIPT_NAME is not counted twice; the query string is taken raw,
    as it was signed."""
    query = request.META.get("QUERY_STRING", "")
    return (
        settings.CLARION["PUBLIC_URL"]
        + escape_uri_path(request.path_info)
        + (f"?{query}" if query else "")
    )


def signed_by_twilio(url: str, params, signature: str) -> bool:
    """Whether the auth token of any configured Twilio SMS provider signed this
    (several accounts, or a failover pair, may report to the same URL)."""
    for token in twilio_auth_tokens():
        if RequestValidator(token).validate(url, params, signature):
            return True
    return False


def twilio_auth_tokens() -> list[str]:
    return [
        configured.provider.auth_token
        for configured in providers_for(Channel.SMS.value)
        if isinstance(configured.provider, TwilioProvider)
    ]


def twilio_status_apply(
    *, delivery_id: int | None, message_sid: str, status: str, error_code: str = ""
) -> tuple[int, str]:
    """Apply one verified callback; (HTTP status, detail) to answer.

    With a delivery id (the URL Twilio was given names it, and the signature
    covers the URL) the delivery must be an SMS and, once the send recorded
    Twilio's sid, hold this one, so a signed callback about another message
    cannot move it. Without one (a Messaging Service's own callback URL) the
    sid alone names the delivery."""
    if status in DELIVERED_STATUSES:
        target, reason = DeliveryStatus.DELIVERED.value, ""
    elif status in FAILED_STATUSES:
        target = DeliveryStatus.FAILED.value
        reason = f"carrier_failed:{error_code}" if error_code else "undelivered"
    else:
        return 204, "Interim status: nothing to do."

    if delivery_id is None:
        moved = deliveries_advance(status=target, provider_message_ids=[message_sid], reason=reason)
        return 204, f"{len(moved)} moved."
    row = (
        Delivery.objects.filter(id=delivery_id, channel=Channel.SMS.value)
        .values_list("provider_message_id", flat=True)
        .first()
    )
    if row is None:
        return 404, "No such SMS delivery."
    if row and row != message_sid:
        log.warning(
            "twilio callback for %s names delivery %s, which holds %s",
            message_sid,
            delivery_id,
            row,
        )
        return 409, "The delivery holds another message."
    moved = deliveries_advance(status=target, delivery_ids=[delivery_id], reason=reason)
    return 204, f"{len(moved)} moved."


def _answer(status: int, detail: str) -> HttpResponse:
    if status == 204:
        return HttpResponse(status=204)
    return HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")
