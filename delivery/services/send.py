"""Sending claimed deliveries: render, hand to the channel's providers with
failover, and record what happened.

Content is rendered when the delivery is sent (quiet hours may hold it for
hours) from the type's templates in the recipient's locale, and stored on the
delivery, so what was sent stays as it was whatever later edits of the
templates. Digest deliveries come with their content already rendered by the
digest flush. A template that fails fails that delivery (`failed`, reason
`template`), never the others, and so does content missing what its channel
requires; a recipient without an address for the channel is `skipped`
(`no_address`); a channel without a provider is `skipped` (`no_provider`).

Three steps, so no database transaction stays open while a provider talks to
the outside world:
1. `_prepare`, one transaction: read the rows still holding the lease,
   render and store contents, settle what cannot be sent, count an attempt
   for the rest (before sending, so a message that kills its worker every
   time still ends `dead` after CLARION_DELIVERY_MAX_ATTEMPTS);
2. `send_through_chain`: the channel's providers in failover order, each
   behind its circuit breaker; what one answers as retryable goes to the next;
3. `_settle`, one transaction: one statement records every outcome on the
   rows still holding the lease (sent, failed, queued again with a backoff,
   or dead), one more writes the attempt log, dead push tokens are removed.
Every step is one statement per batch, never one per delivery.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.channels import CHANNELS
from common.choices import Channel, DeliveryStatus
from common.rows import named_rows
from common.sqljson import from_db_json
from delivery.links import unsubscribe_url
from delivery.metrics import DELIVERY_OUTCOMES, PROVIDER_CALL_SECONDS
from delivery.providers.base import DELIVERED, FAILED, RETRY, SENT, Message, Outcome
from delivery.providers.http import RESPONSE_KEEP_CHARS
from delivery.providers.registry import ConfiguredProvider, providers_for
from delivery.services.backoff import retry_delay
from delivery.services.breaker import Permit, breakers_allow, breakers_record
from delivery.tracking import tracked_html
from notifications.services.profiles import Profile, profile_columns, recipient_context
from notifications.services.status_webhooks import status_events_record
from templates_app.engine import TemplateError
from templates_app.rendering import build_context, render_channel, require_content

log = logging.getLogger(__name__)

# An outcome of ours, never a provider's: every provider of the chain was
# refused by its breaker. The delivery waits without spending an attempt.
DEFERRED = "deferred"
TARGET_CHANNELS = (Channel.PUSH.value, Channel.WEB_PUSH.value)
# What a provider's callback may have made of a delivery before its send was recorded.
ADVANCED = ("delivered", "opened", "clicked", "failed")
ALLOWED = Permit(True)  # a provider without a breaker

_CLAIMED = f"""
SELECT d.id AS delivery_id, d.channel, d.content, d.attempts, n.event_id, e.actor, e.data,
       t.key AS type_key, t.category, t.required_channels, t.templates, t.default_locale,
       {profile_columns("r", prefix="recipient_")}
FROM notifications_delivery d
JOIN notifications_notification n ON n.id = d.notification_id
JOIN notifications_event e ON e.id = n.event_id
JOIN notifications_notificationtype t ON t.id = e.type_id
JOIN notifications_recipient r ON r.id = n.recipient_id
WHERE d.id = ANY(%s) AND d.status = 'queued' AND d.next_attempt_at = %s
ORDER BY d.id
FOR UPDATE OF d SKIP LOCKED
"""


@dataclass
class Batch:
    """Messages of one channel (and push platform) for one provider chain."""

    chain: list[ConfiguredProvider]
    messages: list[Message]


@dataclass
class Result:
    """What the chain did with one message: the last provider's outcome, and
    every provider's answer on the way (the attempt log)."""

    outcome: Outcome
    provider: str = ""
    tries: list[tuple[str, Outcome]] = field(default_factory=list)


def deliveries_send(*, delivery_ids: list[int], lease: datetime) -> dict[str, int]:
    """Render and send the deliveries still holding this lease; counts by outcome."""
    counts: dict[str, int] = {}
    batches, attempts, recipients = _prepare(delivery_ids, lease, counts)
    results: dict[int, Result] = {}
    for batch in batches:
        for delivery_id, result in send_through_chain(batch.chain, batch.messages).items():
            results[delivery_id] = _merge(results.get(delivery_id), result)
    if results:
        _settle(results, attempts, recipients, lease, counts)
    return counts


# --- 1. prepare --------------------------------------------------------------


def _prepare(
    delivery_ids: list[int], lease: datetime, counts: dict[str, int]
) -> tuple[list[Batch], dict[int, int], dict[int, int]]:
    def count(outcome: str, n: int) -> None:
        if n:
            counts[outcome] = counts.get(outcome, 0) + n

    max_attempts = settings.CLARION["DELIVERY_MAX_ATTEMPTS"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            named_rows(cursor).execute(_CLAIMED, [delivery_ids, lease])
            rows = cursor.fetchall()
        # Claimed again and again without an outcome: its sends kill the worker.
        exhausted = [row.delivery_id for row in rows if row.attempts >= max_attempts]
        rows = [row for row in rows if row.attempts < max_attempts]
        targets = _targets(rows)
        contents: dict[int, dict] = {}
        addresses: dict[int, str] = {}
        failed: dict[int, str] = {}
        no_address: list[int] = []
        for row in rows:
            profile = Profile.from_prefixed(row, "recipient_")
            address = _address(row.channel, profile)
            if not address and not targets.get(row.delivery_id):
                no_address.append(row.delivery_id)
                continue
            addresses[row.delivery_id] = address
            try:
                stored = from_db_json(row.content)
                content = stored if stored else _render(row, profile)
                require_content(row.channel, content)  # e.g. an email whose subject rendered empty
                contents[row.delivery_id] = content
            except TemplateError as exc:
                failed[row.delivery_id] = str(exc)
        _record_contents(contents, addresses)
        if exhausted:
            _record(exhausted, DeliveryStatus.DEAD, "attempts_exhausted")
            count("dead", len(exhausted))
        if failed:
            _record(list(failed), DeliveryStatus.FAILED, "template", errors=failed)
            count("template_failed", len(failed))
        if no_address:
            _record(no_address, DeliveryStatus.SKIPPED, "no_address")
            count("no_address", len(no_address))

        batches: dict[tuple[str, str], Batch] = {}
        no_provider: list[int] = []
        attempts: dict[int, int] = {}
        recipients: dict[int, int] = {}
        for row in rows:
            if row.delivery_id not in contents:
                continue
            chain = providers_for(row.channel)
            if not chain:
                no_provider.append(row.delivery_id)
                continue
            attempts[row.delivery_id] = row.attempts + 1
            recipients[row.delivery_id] = row.recipient_id
            for platform, platform_targets in _by_platform(targets.get(row.delivery_id, ())):
                platform_chain = [p for p in chain if _serves(p, platform)]
                if not platform_chain:
                    continue
                batch = batches.setdefault((row.channel, platform), Batch(platform_chain, []))
                batch.messages.append(_message(row, addresses, contents, platform_targets))
        if no_provider:
            _record(no_provider, DeliveryStatus.SKIPPED, "no_provider")
            count("no_provider", len(no_provider))
        unroutable = set(attempts) - {
            m.delivery_id for batch in batches.values() for m in batch.messages
        }
        if unroutable:  # push tokens of a platform no provider sends
            _record(sorted(unroutable), DeliveryStatus.SKIPPED, "no_provider")
            count("no_provider", len(unroutable))
            for delivery_id in unroutable:
                attempts.pop(delivery_id)
        if attempts:
            _count_attempt(list(attempts))
    return list(batches.values()), attempts, recipients


def _address(channel: str, profile: Profile) -> str:
    if channel == Channel.WEBHOOK:
        data = from_db_json(profile.data) or {}
        url = data.get("webhook_url") if isinstance(data, dict) else None
        return url if isinstance(url, str) else ""
    field_name = CHANNELS[channel].address_field
    return getattr(profile, field_name) if field_name else ""


def _targets(rows) -> dict[int, tuple[str, ...]]:
    """Push tokens ("platform:token") and web push subscriptions per delivery,
    one query per channel for the whole batch."""
    by_channel: dict[str, list] = {}
    for row in rows:
        if row.channel in TARGET_CHANNELS:
            by_channel.setdefault(row.channel, []).append(row)
    found: dict[int, tuple[str, ...]] = {}
    if Channel.PUSH in by_channel:
        from notifications.services.push_tokens import push_targets

        tokens = push_targets([row.recipient_id for row in by_channel[Channel.PUSH]])
        for row in by_channel[Channel.PUSH]:
            found[row.delivery_id] = tuple(
                f"{platform}:{token}" for platform, token in tokens.get(row.recipient_id, ())
            )
    if Channel.WEB_PUSH in by_channel:
        from notifications.services.web_push_subscriptions import web_push_targets

        subscriptions = web_push_targets([row.recipient_id for row in by_channel[Channel.WEB_PUSH]])
        for row in by_channel[Channel.WEB_PUSH]:
            found[row.delivery_id] = tuple(subscriptions.get(row.recipient_id, ()))
    return found


def _by_platform(targets: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """Push targets grouped by platform (their providers differ); other channels: one group."""
    if not targets or ":" not in targets[0] or targets[0].startswith("{"):
        return [("", targets)]
    groups: dict[str, list[str]] = {}
    for target in targets:
        platform, _, token = target.partition(":")
        groups.setdefault(platform, []).append(token)
    return [(platform, tuple(tokens)) for platform, tokens in groups.items()]


def _serves(configured: ConfiguredProvider, platform: str) -> bool:
    own = getattr(configured.provider, "platform", "")
    return not platform or not own or own == platform


def _message(row, addresses, contents, targets: tuple[str, ...]) -> Message:
    # No unsubscribe link on a channel the type requires: it could not stop the mail.
    unsubscribe = (
        unsubscribe_url(
            delivery_id=row.delivery_id, recipient_id=row.recipient_id, category=row.category
        )
        if row.channel == Channel.EMAIL and Channel.EMAIL not in (row.required_channels or ())
        else ""
    )
    content = contents[row.delivery_id]
    if row.channel == Channel.EMAIL and content.get("html"):
        # As sent: links through click redirects and an open pixel; the stored
        # content keeps the original, which the redirects are checked against.
        content = {**content, "html": tracked_html(row.delivery_id, content["html"])}
    return Message(
        row.delivery_id,
        row.channel,
        addresses[row.delivery_id],
        content,
        targets=targets,
        unsubscribe_url=unsubscribe,
        event_id=str(row.event_id),
        type_key=row.type_key,
        recipient_external_id=row.recipient_external_id,
    )


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


# --- 2. send -----------------------------------------------------------------


def send_through_chain(
    chain: list[ConfiguredProvider], messages: list[Message]
) -> dict[int, Result]:
    """Send through the first provider whose breaker allows; what it answers
    as retryable goes to the next one, and so on. Messages no provider took
    are retryable (or deferred when every breaker refused)."""
    results: dict[int, Result] = {}
    pending = messages
    retry_at: float | None = None
    for configured in chain:
        if not pending:
            break
        groups = _breaker_groups(configured, pending)
        permits = breakers_allow([name for name in groups if name is not None])
        admitted: list[Message] = []
        refused: list[Message] = []
        for name, group in groups.items():
            permit = permits.get(name, ALLOWED) if name is not None else ALLOWED
            if permit.allowed:
                admitted.extend(group)
            else:
                refused.extend(group)
                retry_at = min(filter(None, (retry_at, permit.retry_at)), default=None)
        if not admitted:
            continue
        outcomes = _call(configured, admitted)
        counts = {}
        for name, group in groups.items():
            if name is None or not permits[name].allowed:
                continue
            ok = sum(1 for m in group if not outcomes[m.delivery_id].retryable)
            counts[name] = (ok, len(group) - ok, permits[name].probe)
        breakers_record(counts)
        for message in admitted:
            outcome = outcomes[message.delivery_id]
            result = results.setdefault(message.delivery_id, Result(outcome))
            result.outcome, result.provider = outcome, configured.name
            result.tries.append((configured.name, outcome))
        pending = refused + [m for m in admitted if outcomes[m.delivery_id].retryable]
    for message in pending:
        if message.delivery_id not in results:
            wait = max(1.0, (retry_at or time.time() + 1) - time.time())
            results[message.delivery_id] = Result(
                Outcome(message.delivery_id, DEFERRED, reason="breaker_open", retry_after=wait)
            )
    return results


def _breaker_groups(
    configured: ConfiguredProvider, messages: list[Message]
) -> dict[str | None, list[Message]]:
    """The messages by the breaker that guards them (None: no breaker): the
    provider's own, or one per destination when the provider names them."""
    provider = configured.provider
    if getattr(provider, "uses_breaker", True):
        return {configured.name: messages}
    destination_of = getattr(provider, "destination_of", None)
    if destination_of is None:
        return {None: messages}
    groups: dict[str | None, list[Message]] = {}
    for message in messages:
        destination = destination_of(message)
        name = f"{configured.name}@{destination}" if destination else None
        groups.setdefault(name, []).append(message)
    return groups


def _call(configured: ConfiguredProvider, messages: list[Message]) -> dict[int, Outcome]:
    started = time.perf_counter()
    try:
        answered = {o.delivery_id: o for o in configured.provider.send(messages)}
    except Exception as exc:  # noqa: BLE001 - a provider's failure is its messages' failure
        log.exception("provider %s failed for %d messages", configured.name, len(messages))
        answered = {}
        error = repr(exc)[:500]
    else:
        error = "the provider gave no outcome for this message"
    PROVIDER_CALL_SECONDS.labels(configured.name).observe(time.perf_counter() - started)
    return {
        m.delivery_id: answered.get(m.delivery_id)
        or Outcome(m.delivery_id, RETRY, reason="provider_error", error=error)
        for m in messages
    }


def _merge(previous: Result | None, result: Result) -> Result:
    """Two platforms' outcomes of one push delivery: sent if either was."""
    if previous is None:
        return result
    rank = {SENT: 0, DELIVERED: 0, RETRY: 1, DEFERRED: 2, FAILED: 3}
    best = min(previous, result, key=lambda r: rank.get(r.outcome.status, 4))
    invalid = previous.outcome.invalid_targets + result.outcome.invalid_targets
    return Result(
        replace(best.outcome, invalid_targets=invalid),
        best.provider,
        previous.tries + result.tries,
    )


# --- 3. settle ---------------------------------------------------------------


def _settle(
    results: dict[int, Result],
    attempts: dict[int, int],
    recipients: dict[int, int],
    lease: datetime,
    counts: dict[str, int],
) -> None:
    now = timezone.now()
    cfg = settings.CLARION
    ids, statuses, reasons, nexts, uncount, providers, message_ids = [], [], [], [], [], [], []
    for delivery_id, result in results.items():
        outcome = result.outcome
        status, reason, next_at, refund = outcome.status, outcome.reason, None, 0
        if status == RETRY:
            if attempts[delivery_id] >= cfg["DELIVERY_MAX_ATTEMPTS"]:
                status = DeliveryStatus.DEAD
            else:
                status = DeliveryStatus.QUEUED
                delay = retry_delay(
                    attempts[delivery_id],
                    base=cfg["DELIVERY_RETRY_BASE_SECONDS"],
                    cap=cfg["DELIVERY_RETRY_MAX_SECONDS"],
                    retry_after=outcome.retry_after,
                )
                next_at = now + timedelta(seconds=delay)
        elif status == DEFERRED:
            status, refund = DeliveryStatus.QUEUED, 1
            next_at = now + timedelta(seconds=outcome.retry_after or 1.0)
        ids.append(delivery_id)
        statuses.append(str(status))
        reasons.append(reason[:64])
        nexts.append(next_at)
        uncount.append(refund)
        providers.append(result.provider[:100])
        message_ids.append(outcome.provider_message_id[:255])
    with transaction.atomic(), connection.cursor() as cursor:
        # A provider's callback may come before this record (an SMS delivered
        # while the rest of its batch was still being sent): deliveries_advance
        # then moved the row on under the same lease, and its status stays;
        # the provider, its message id and the attempt log are still recorded.
        cursor.execute(
            "UPDATE notifications_delivery d SET"
            " status = CASE WHEN d.status = 'queued' THEN v.status ELSE d.status END,"
            " reason = CASE WHEN d.status = 'queued' THEN v.reason ELSE d.reason END,"
            " next_attempt_at = v.next_at, attempts = d.attempts - v.refund,"
            " provider = CASE WHEN v.provider = '' THEN d.provider ELSE v.provider END,"
            " provider_message_id = CASE WHEN v.message_id = '' THEN d.provider_message_id"
            "   ELSE v.message_id END, updated_at = now()"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::int[],"
            "             %s::text[], %s::text[])"
            "   AS v(id, status, reason, next_at, refund, provider, message_id)"
            " WHERE d.id = v.id AND d.next_attempt_at = %s AND (d.status = 'queued'"
            "   OR (v.status IN ('sent', 'delivered') AND d.status = ANY(%s::text[])))"
            " RETURNING d.id, d.status, d.channel, d.status = v.status",
            [ids, statuses, reasons, nexts, uncount, providers, message_ids, lease, list(ADVANCED)],
        )
        settled = cursor.fetchall()
        settled_ids = {row[0] for row in settled}
        _log_attempts([(i, results[i]) for i in ids if i in settled_ids])
        _prune([(i, results[i].outcome) for i in ids if i in settled_ids], recipients)
        by_status: dict[str, list[int]] = {}
        for delivery_id, status, channel, ours in settled:
            if ours:  # an early callback's status was announced when it came
                by_status.setdefault(status, []).append(delivery_id)
            DELIVERY_OUTCOMES.labels(channel, status).inc()
            counts[status] = counts.get(status, 0) + 1
        for status in (
            DeliveryStatus.SENT,
            DeliveryStatus.DELIVERED,
            DeliveryStatus.FAILED,
            DeliveryStatus.DEAD,
        ):
            if by_status.get(status):
                status_events_record(f"delivery.{status}", delivery_ids=by_status[status])


def _log_attempts(settled: list[tuple[int, Result]]) -> None:
    columns: tuple[list, ...] = ([], [], [], [], [], [], [])
    for delivery_id, result in settled:
        for provider, o in result.tries:
            for column, value in zip(
                columns,
                (
                    delivery_id,
                    provider[:100],
                    o.status,
                    o.status_code,
                    o.duration_ms,
                    (o.error or o.reason)[:RESPONSE_KEEP_CHARS],
                    o.response[:RESPONSE_KEEP_CHARS],
                ),
                strict=True,
            ):
                column.append(value)
    if not columns[0]:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_deliveryattempt (delivery_id, created_at,"
            " provider, outcome, status_code, duration_ms, error, response)"
            " SELECT id, now(), provider, outcome, code, ms, error, response"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::int[], %s::int[],"
            "             %s::text[], %s::text[]) AS v(id, provider, outcome, code, ms, error,"
            "             response)",
            list(columns),
        )


def _prune(settled: list[tuple[int, Outcome]], recipients: dict[int, int]) -> None:
    """Remove the push tokens and subscriptions providers called invalid."""
    tokens, subscriptions = [], []
    for delivery_id, outcome in settled:
        for target in outcome.invalid_targets:
            pair = (recipients[delivery_id], target)
            (subscriptions if target.startswith(("http://", "https://")) else tokens).append(pair)
    if tokens:
        from notifications.services.push_tokens import push_tokens_prune

        push_tokens_prune(tokens)
    if subscriptions:
        from notifications.services.web_push_subscriptions import web_push_prune

        web_push_prune(subscriptions)


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
    ids: list[int], status: str, reason: str, *, errors: dict[int, str] | None = None
) -> None:
    """Settle deliveries that were never handed to a provider; with `errors`,
    log an attempt with its error for each."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_delivery SET status = %s, reason = %s, next_attempt_at = NULL,"
            " attempts = attempts + 1, updated_at = now() WHERE id = ANY(%s) RETURNING id",
            [status, reason, ids],
        )
        settled = [delivery_id for (delivery_id,) in cursor.fetchall()]
        if errors:
            logged = [i for i in settled if i in errors]
            if logged:
                cursor.execute(
                    "INSERT INTO notifications_deliveryattempt"
                    " (delivery_id, created_at, response, error, provider, outcome)"
                    " SELECT id, now(), '', error, '', 'failed'"
                    " FROM unnest(%s::bigint[], %s::text[]) AS v(id, error)",
                    [logged, [errors[i] for i in logged]],
                )
    if status == DeliveryStatus.DEAD and settled:
        status_events_record("delivery.dead", delivery_ids=settled)
