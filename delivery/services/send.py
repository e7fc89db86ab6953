"""Sending claimed deliveries: render each channel's content, record it, hand
it to the channel's provider.

Content is rendered when the delivery is sent (quiet hours may hold it for
hours) from the type's templates in the recipient's locale, and stored on the
delivery, so what was sent stays as it was whatever later edits of the
templates. Digest deliveries come with their content already rendered by the
digest flush, which has the window's items. A template that fails fails that
delivery (`failed`, reason `template`, the error in its attempt log), never
the others; a recipient without an address for the channel is `skipped`
(`no_address`); a channel without a provider is `skipped` (`no_provider`).
Every step is one statement for the whole batch.
"""
from __future__ import annotations

import logging
from datetime import datetime

import orjson
from django.db import connection, transaction

from delivery.providers import provider_for
from notifications.models import DeliveryStatus
from notifications.services.fanout import recipient_context
from notifications.sqljson import from_db_json
from templates_app.engine import TemplateError
from templates_app.rendering import build_context, render_channel

log = logging.getLogger(__name__)

# The profile field a channel's address comes from (others: the provider's concern).
ADDRESS_FIELDS = {"email": 2, "sms": 3}  # positions in the profile row

_CLAIMED = """
SELECT d.id, d.channel, d.content, n.event_id, e.actor, e.data, t.key, t.templates, t.default_locale,
       r.id, r.external_id, r.email, r.phone, r.locale, r.timezone, r.data
FROM notifications_delivery d
JOIN notifications_notification n ON n.id = d.notification_id
JOIN notifications_event e ON e.id = n.event_id
JOIN notifications_notificationtype t ON t.id = e.type_id
JOIN notifications_recipient r ON r.id = n.recipient_id
WHERE d.id = ANY(%s) AND d.status = 'queued' AND d.next_attempt_at = %s
ORDER BY d.id
FOR UPDATE OF d SKIP LOCKED
"""


def deliveries_send(*, delivery_ids: list[int], lease: datetime) -> dict[str, int]:
    """Render and send the deliveries still holding this lease; counts by outcome."""
    counts: dict[str, int] = {}

    def count(outcome: str, n: int = 1) -> None:
        counts[outcome] = counts.get(outcome, 0) + n

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_CLAIMED, [delivery_ids, lease])
            rows = cursor.fetchall()
        contents: dict[int, dict] = {}
        addresses: dict[int, str] = {}
        failed: dict[int, str] = {}
        no_address: list[int] = []
        for row in rows:
            delivery_id, channel, stored = row[0], row[1], from_db_json(row[2])
            profile = row[9:]
            address = profile[ADDRESS_FIELDS[channel]] if channel in ADDRESS_FIELDS else ""
            if channel in ADDRESS_FIELDS and not address:
                no_address.append(delivery_id)
                continue
            addresses[delivery_id] = address
            try:
                contents[delivery_id] = stored if stored else _render(row)
            except TemplateError as exc:
                failed[delivery_id] = str(exc)
        _record_contents(contents, addresses)
        if failed:
            _record(list(failed), DeliveryStatus.FAILED, "template", errors=failed)
            count("template_failed", len(failed))
        if no_address:
            _record(no_address, DeliveryStatus.SKIPPED, "no_address")
            count("no_address", len(no_address))
        by_channel: dict[str, list[int]] = {}
        for row in rows:
            if row[0] in contents:
                by_channel.setdefault(row[1], []).append(row[0])
        for channel, ids in by_channel.items():
            provider = provider_for(channel)
            if provider is None:
                _record(ids, DeliveryStatus.SKIPPED, "no_provider")
                count("no_provider", len(ids))
                continue
            for outcome in provider.send(ids):
                _record([outcome.delivery_id], outcome.status, outcome.reason,
                        errors={outcome.delivery_id: outcome.error} if outcome.error else None)
                count(outcome.status)
    return counts


def _render(row: tuple) -> dict:
    (_, channel, _, event_id, actor, data, type_key, templates, default_locale, *profile) = row
    recipient = recipient_context(profile)
    context = build_context(
        data=from_db_json(data) or {}, actor=actor, event={"id": str(event_id), "type": type_key}, recipient=recipient
    )
    return render_channel(
        templates=from_db_json(templates) or {}, channel=channel, locale=recipient["locale"],
        default_locale=default_locale, context=context,
    )


def _record_contents(contents: dict[int, dict], addresses: dict[int, str]) -> None:
    if not contents:
        return
    ids = list(contents)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery d SET content = v.content, address = v.address"
            " FROM unnest(%s::bigint[], %s::jsonb[], %s::text[]) AS v(id, content, address) WHERE d.id = v.id",
            [ids, [orjson.dumps(contents[i]).decode() for i in ids], [addresses.get(i, "") for i in ids]],
        )


def _record(ids: list[int], status: str, reason: str, *, errors: dict[int, str] | None = None) -> None:
    """Settle deliveries; with `errors`, log an attempt with its error for each."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery SET status = %s, reason = %s, next_attempt_at = NULL,"
            " attempts = attempts + 1, updated_at = now() WHERE id = ANY(%s)",
            [status, reason, ids],
        )
        if errors:
            cursor.execute(
                "INSERT INTO notifications_deliveryattempt (delivery_id, created_at, response, error)"
                " SELECT id, now(), '', error FROM unnest(%s::bigint[], %s::text[]) AS v(id, error)",
                [list(errors), list(errors.values())],
            )
