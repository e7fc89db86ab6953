"""What happens to an email after it was sent: delivered, opened, clicked,
bounced, complained about. Events come in django-anymail's normalized form
from two places:

- anymail's `tracking` signal (an ESP's webhook, through anymail's views),
  connected in `delivery/apps.py`;
- `POST /hooks/email/events`, a JSON list of normalized events
  (`{"event_type", "message_id", "recipient", "timestamp", "metadata"}`)
  signed per Standard Webhooks with `hook_secret()`, for a relay or MTA of
  the operator's own. A bad or stale signature is 401 and changes nothing.

Each event finds its delivery by `metadata.clarion_delivery` (set on every
email the `django://` provider sends), else by a Message-ID of ours
(`<clarion-delivery-N@…>`), else by the provider's message id, and moves it
forward (`deliveries_advance`). A bounce or a complaint also stops email to
that address: the recipient's email channel is turned off in their
preferences (globally, and wherever a category or type had it on), which the
fan-out honours like any choice of theirs; only the type's required
channels still go. A recipient whose address has changed since is left alone.
Events replayed or out of order are harmless: deliveries only move forward.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import orjson
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from standardwebhooks.webhooks import Webhook

from common.choices import Channel, DeliveryStatus
from delivery.hooks.signing import hook_secret
from notifications.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from notifications.models import Delivery, Recipient
from notifications.services.delivery_status import deliveries_advance
from preferences.services import preferences_get, preferences_put

log = logging.getLogger(__name__)

# Normalized event type -> (delivery status, reason). Others (queued, sent,
# deferred, autoresponded, unsubscribed, …) say nothing a delivery records.
STATUS_FOR: dict[str, tuple[str, str]] = {
    "delivered": (DeliveryStatus.DELIVERED, ""),
    "opened": (DeliveryStatus.OPENED, ""),
    "clicked": (DeliveryStatus.CLICKED, ""),
    "bounced": (DeliveryStatus.FAILED, "bounced"),
    "complained": (DeliveryStatus.FAILED, "complained"),
    "rejected": (DeliveryStatus.FAILED, "rejected"),
    "failed": (DeliveryStatus.FAILED, "failed"),
}
# Applied in lifecycle order, so a batch holding "delivered" and "opened" of
# one message ends at opened whatever their order in it.
APPLY_ORDER = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.OPENED,
    DeliveryStatus.CLICKED,
    DeliveryStatus.FAILED,
)
# Events that mean "stop emailing this address"; an ESP's rejection counts
# when it rejected for one of these reasons (its own suppression list).
SUPPRESSING_TYPES = frozenset({"bounced", "complained"})
SUPPRESSING_REJECT_REASONS = frozenset({"bounced", "complained", "invalid"})

OUR_MESSAGE_ID = re.compile(r"^<?clarion-delivery-([0-9]{1,18})@[^<>\s]*>?$")
MAX_EVENTS = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_FIELD_CHARS = 998


@dataclass(frozen=True)
class EmailEvent:
    """One normalized event (anymail's names) about one sent email."""

    event_type: str
    message_id: str = ""
    recipient: str = ""
    metadata: dict = field(default_factory=dict)
    reject_reason: str = ""

    @classmethod
    def from_json(cls, item: object) -> EmailEvent | None:
        """An event from a posted JSON object; None if it is not one."""
        if not isinstance(item, dict) or not isinstance(item.get("event_type"), str):
            return None
        metadata = item.get("metadata")
        return cls(
            event_type=item["event_type"][:32],
            message_id=_text(item.get("message_id")),
            recipient=_text(item.get("recipient")),
            metadata=metadata if isinstance(metadata, dict) else {},
            reject_reason=_text(item.get("reject_reason")),
        )

    @classmethod
    def from_anymail(cls, event) -> EmailEvent:
        """An event from anymail's AnymailTrackingEvent."""
        metadata = getattr(event, "metadata", None)
        return cls(
            event_type=str(getattr(event, "event_type", "") or "")[:32],
            message_id=_text(getattr(event, "message_id", None)),
            recipient=_text(getattr(event, "recipient", None)),
            metadata=metadata if isinstance(metadata, dict) else {},
            reject_reason=_text(getattr(event, "reject_reason", None)),
        )

    @property
    def delivery_id(self) -> int | None:
        """Our delivery id, when the event carries it (metadata, or our Message-ID)."""
        ours = self.metadata.get("clarion_delivery")
        if isinstance(ours, int) and not isinstance(ours, bool):
            ours = str(ours)
        if isinstance(ours, str) and ours.isascii() and ours.isdigit() and len(ours) <= 18:
            return int(ours)
        match = OUR_MESSAGE_ID.match(self.message_id.strip())
        return int(match.group(1)) if match else None

    @property
    def provider_message_ids(self) -> tuple[str, ...]:
        """The forms the provider's id may be stored in: bare and <bracketed>."""
        bare = self.message_id.strip().removeprefix("<").removesuffix(">")
        return (bare, f"<{bare}>") if bare else ()

    @property
    def suppresses(self) -> bool:
        return self.event_type in SUPPRESSING_TYPES or (
            self.event_type == "rejected" and self.reject_reason in SUPPRESSING_REJECT_REASONS
        )


def _text(value: object) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)[:MAX_FIELD_CHARS]


def email_events_apply(*, events: list[EmailEvent]) -> dict[str, int]:
    """Apply events to their deliveries (and bounces to preferences); counts."""
    relevant = [e for e in events if e.event_type in STATUS_FOR]
    ids = {e.delivery_id for e in relevant} - {None}
    provider_ids = {
        pid for e in relevant if e.delivery_id is None for pid in e.provider_message_ids
    }
    counts = {"matched": 0, "advanced": 0, "suppressed": 0}
    if not ids and not provider_ids:
        return counts
    rows = list(
        Delivery.objects.filter(channel=Channel.EMAIL)
        .filter(
            Q(id__in=ids) | (Q(provider_message_id__in=provider_ids) & ~Q(provider_message_id=""))
        )
        .values(
            "id",
            "provider_message_id",
            "address",
            "notification__recipient_id",
            "notification__recipient__email",
        )
    )
    by_id = {row["id"]: row for row in rows}
    by_provider_id = {row["provider_message_id"]: row for row in rows if row["provider_message_id"]}

    groups: dict[tuple[str, str], set[int]] = {}
    suppress: set[int] = set()
    for event in relevant:
        row = (
            by_id.get(event.delivery_id)
            if event.delivery_id is not None
            else next(
                (by_provider_id[p] for p in event.provider_message_ids if p in by_provider_id), None
            )
        )
        if row is None:
            continue
        counts["matched"] += 1
        groups.setdefault(STATUS_FOR[event.event_type], set()).add(row["id"])
        if event.suppresses:
            bounced = (event.recipient or row["address"]).strip().casefold()
            current = (row["notification__recipient__email"] or "").strip().casefold()
            if bounced and bounced == current:
                suppress.add(row["notification__recipient_id"])

    for status in APPLY_ORDER:
        for (group_status, reason), delivery_ids in groups.items():
            if group_status == status:
                moved = deliveries_advance(
                    status=status, delivery_ids=sorted(delivery_ids), reason=reason
                )
                counts["advanced"] += len(moved)
    if suppress:
        counts["suppressed"] = recipients_suppress_email(recipient_ids=sorted(suppress))
    return counts


def recipients_suppress_email(*, recipient_ids: list[int]) -> int:
    """Turn email off for these recipients, everywhere they had it on; how
    many changed. Their other preferences stay as they were.

    One read and one write of the preferences document per recipient (the
    preferences service's own validation and storage); bounces come a few
    per call, so this stays small. A set-based preferences service would
    make it two statements (see the report on issue 11)."""
    changed = 0
    with transaction.atomic():
        locked = (
            Recipient.objects.select_for_update()
            .filter(id__in=recipient_ids)
            .order_by("id")
            .values_list("id", flat=True)
        )
        for recipient_id in list(locked):
            document = preferences_get(recipient_id=recipient_id)
            email_on = [
                channels
                for bucket in ("categories", "types")
                for channels in document[bucket].values()
                if channels.get(Channel.EMAIL)
            ]
            if document["channels"].get(Channel.EMAIL) is False and not email_on:
                continue
            document["channels"][Channel.EMAIL.value] = False
            for channels in email_on:
                channels[Channel.EMAIL.value] = False
            preferences_put(recipient_id=recipient_id, body=document)
            changed += 1
    if changed:
        log.info("email suppressed for %d recipients after bounces/complaints", changed)
    return changed


def on_anymail_tracking(sender, event, esp_name: str = "", **kwargs) -> None:
    """anymail's `tracking` signal: an ESP's webhook, already authenticated by anymail."""
    email_events_apply(events=[EmailEvent.from_anymail(event)])


def _problem(status: int, detail: str) -> JsonResponse:
    return JsonResponse(
        problem_body(status, detail), status=status, content_type=PROBLEM_CONTENT_TYPE
    )


@csrf_exempt
def email_events_view(request: HttpRequest) -> JsonResponse:
    """POST /hooks/email/events: signed normalized events -> `email_events_apply`."""
    if request.method != "POST":
        response = _problem(405, "Only POST is allowed here.")
        response["Allow"] = "POST"
        return response
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return _problem(413, f"At most {MAX_BODY_BYTES} bytes of events per call.")
    try:
        body = request.body
    except RequestDataTooBig:
        return _problem(413, f"At most {MAX_BODY_BYTES} bytes of events per call.")
    if len(body) > MAX_BODY_BYTES:
        return _problem(413, f"At most {MAX_BODY_BYTES} bytes of events per call.")
    try:
        Webhook(hook_secret()).verify(body, dict(request.headers), json_parse=False)
    except Exception:  # noqa: BLE001 - missing, malformed, wrong or stale: all unauthorized
        return _problem(401, "Missing, invalid or stale Standard Webhooks signature.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _problem(400, "The body is not JSON.")
    items = (
        payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else None
    )
    if items is None:
        return _problem(400, "Expected a JSON list of events.")
    if len(items) > MAX_EVENTS:
        return _problem(413, f"At most {MAX_EVENTS} events per call.")
    events = [event for event in map(EmailEvent.from_json, items) if event is not None]
    counts = email_events_apply(events=events)
    return JsonResponse({"received": len(items), "ignored": len(items) - len(events), **counts})
