"""Sending claimed deliveries: render each channel's content, record it, hand
it to the channel's provider.

Content is rendered when the delivery is sent (quiet hours may hold it for
hours) from the type's templates in the recipient's locale, and stored on the
delivery, so what was sent stays as it was whatever later edits of the
templates. Digest deliveries come with their content already rendered by the
digest flush, which has the window's items. A template that fails fails that
delivery (`failed`, reason `template`, the error in its attempt log), never
the others, and so does content missing what its channel requires (an email
whose subject rendered empty); a recipient without an address for the
channel is `skipped` (`no_address`); a channel without a provider is
`skipped` (`no_provider`).
Every step is one statement for the whole batch, and no transaction is open
while a provider sends.
"""

from __future__ import annotations

import logging
from datetime import datetime

import orjson
from django.db import connection, transaction

from common.channels import CHANNELS
from common.choices import DeliveryStatus
from common.rows import named_rows
from common.sqljson import from_db_json
from delivery.providers import Message, Outcome, Provider, provider_for
from notifications.services.profiles import Profile, profile_columns, recipient_context
from templates_app.engine import TemplateError
from templates_app.rendering import build_context, render_channel, require_content

log = logging.getLogger(__name__)

_CLAIMED = f"""
SELECT d.id AS delivery_id, d.channel, d.content, n.event_id, e.actor, e.data, t.key AS type_key,
       t.templates, t.default_locale, {profile_columns("r", prefix="recipient_")}
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
    """Render and send the deliveries still holding this lease; counts by outcome.

    Three steps, so no database transaction stays open while a provider talks
    to the outside world: (1) in one transaction, render and store contents,
    settle what cannot be sent, count an attempt for the rest; (2) call the
    providers; (3) record their outcomes on the rows still holding the lease.
    """
    counts: dict[str, int] = {}

    def count(outcome: str, n: int = 1) -> None:
        counts[outcome] = counts.get(outcome, 0) + n

    batches: list[tuple[Provider, list[Message]]] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            named_rows(cursor).execute(_CLAIMED, [delivery_ids, lease])
            rows = cursor.fetchall()
        contents: dict[int, dict] = {}
        addresses: dict[int, str] = {}
        failed: dict[int, str] = {}
        no_address: list[int] = []
        for row in rows:
            delivery_id, channel, stored = row.delivery_id, row.channel, from_db_json(row.content)
            profile = Profile.from_prefixed(row, "recipient_")
            address_field = CHANNELS[channel].address_field
            address = getattr(profile, address_field) if address_field else ""
            if address_field and not address:
                no_address.append(delivery_id)
                continue
            addresses[delivery_id] = address
            try:
                content = stored if stored else _render(row, profile)
                require_content(channel, content)  # e.g. an email whose subject rendered empty
                contents[delivery_id] = content
            except TemplateError as exc:
                failed[delivery_id] = str(exc)
        _record_contents(contents, addresses)
        if failed:
            _record(list(failed), DeliveryStatus.FAILED, "template", errors=failed)
            count("template_failed", len(failed))
        if no_address:
            _record(no_address, DeliveryStatus.SKIPPED, "no_address")
            count("no_address", len(no_address))
        by_channel: dict[str, list[Message]] = {}
        for row in rows:
            if row.delivery_id in contents:
                message = Message(
                    row.delivery_id,
                    row.channel,
                    addresses[row.delivery_id],
                    contents[row.delivery_id],
                )
                by_channel.setdefault(row.channel, []).append(message)
        for channel, messages in by_channel.items():
            provider = provider_for(channel)
            if provider is None:
                _record([m.delivery_id for m in messages], DeliveryStatus.SKIPPED, "no_provider")
                count("no_provider", len(messages))
            else:
                batches.append((provider, messages))
        if batches:
            _count_attempt([m.delivery_id for _, messages in batches for m in messages])

    outcomes: list[Outcome] = []
    for provider, messages in batches:
        try:
            outcomes.extend(provider.send(messages))
        except Exception as exc:  # noqa: BLE001 - a provider's failure is its deliveries' failure
            log.exception(
                "provider %s failed for %d messages", type(provider).__name__, len(messages)
            )
            outcomes.extend(
                Outcome(m.delivery_id, DeliveryStatus.FAILED, "provider_error", repr(exc))
                for m in messages
            )
    by_kind: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault((outcome.status, outcome.reason), []).append(outcome)
    with transaction.atomic():
        for (
            status,
            reason,
        ), group in by_kind.items():  # a statement per kind of outcome, not per delivery
            errors = {o.delivery_id: o.error for o in group if o.error}
            _record(
                [o.delivery_id for o in group],
                status,
                reason,
                lease=lease,
                attempt_counted=True,
                errors=errors or None,
            )
            count(status, len(group))
    return counts


def _render(row, profile: Profile) -> dict:
    """The content of a claimed delivery (a row of _CLAIMED) for its recipient."""
    recipient = recipient_context(profile)
    context = build_context(
        data=from_db_json(row.data) or {},
        actor=row.actor,
        event={"id": str(row.event_id), "type": row.type_key},
        recipient=recipient,
    )
    return render_channel(
        templates=from_db_json(row.templates) or {},
        channel=row.channel,
        locale=recipient["locale"],
        default_locale=row.default_locale,
        context=context,
    )


def _record_contents(contents: dict[int, dict], addresses: dict[int, str]) -> None:
    if not contents:
        return
    ids = list(contents)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery d SET content = v.content, address = v.address"
            " FROM unnest(%s::bigint[], %s::jsonb[], %s::text[]) AS v(id, content, address)"
            " WHERE d.id = v.id",
            [
                ids,
                [orjson.dumps(contents[i]).decode() for i in ids],
                [addresses.get(i, "") for i in ids],
            ],
        )


def _count_attempt(ids: list[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery SET attempts = attempts + 1, updated_at = now()"
            " WHERE id = ANY(%s)",
            [ids],
        )


def _record(
    ids: list[int],
    status: str,
    reason: str,
    *,
    errors: dict[int, str] | None = None,
    lease: datetime | None = None,
    attempt_counted: bool = False,
) -> None:
    """Settle deliveries (with `lease`: only those still holding it); with
    `errors`, log an attempt with its error for each."""
    guard = " AND status = 'queued' AND next_attempt_at = %s" if lease else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery SET status = %s, reason = %s, next_attempt_at = NULL,"
            f" attempts = attempts + {0 if attempt_counted else 1}, updated_at = now()"
            f" WHERE id = ANY(%s){guard} RETURNING id",
            [status, reason, ids, *([lease] if lease else [])],
        )
        settled = [delivery_id for (delivery_id,) in cursor.fetchall()]
        if errors:
            logged = [i for i in settled if i in errors]
            if logged:
                cursor.execute(
                    "INSERT INTO notifications_deliveryattempt"
                    " (delivery_id, created_at, response, error)"
                    " SELECT id, now(), '', error"
                    " FROM unnest(%s::bigint[], %s::text[]) AS v(id, error)",
                    [logged, [errors[i] for i in logged]],
                )
