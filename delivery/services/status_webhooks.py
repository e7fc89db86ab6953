"""Sending status webhook calls: the outbox `status_events_record` fills
(notifications/services/status_webhooks.py), drained by a Beat sweep.

Like deliveries, in three steps so no transaction stays open while a
producer's endpoint answers:
1. claim: one statement takes the due rows (`FOR UPDATE SKIP LOCKED`, so
   overlapping sweeps never share a row), counts the attempt and leases
   them by moving `next_attempt_at` past the time the sends can take; a row
   whose sweep died is due again when the lease ends. A row claimed once
   more than the attempts allow (it kills its sweep every time) is dead;
2. send: each call signed with its endpoint's secret (Standard Webhooks,
   `webhook-id` = the call's message_id, the same on every retry), through
   the SSRF-guarded client, a few at a time;
3. record: one statement settles every row still holding the lease: 2xx
   sent; timeout, connection error, 5xx, 429 queued again after the
   delivery backoff (full jitter, Retry-After honoured) until
   CLARION_DELIVERY_MAX_ATTEMPTS, then dead; a redirect, a refused address
   or another 4xx dead at once.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.rows import rows_as
from delivery.providers.base import RETRY, SENT, Message, Outcome
from delivery.providers.ssrf import guarded_client
from delivery.providers.webhook import webhook_call
from delivery.services.backoff import retry_delay

log = logging.getLogger(__name__)

SEND_THREADS = 8
ERROR_KEEP_CHARS = 1000


@dataclass(frozen=True)
class DueCall:
    """A claimed call, as `_CLAIM` returns it."""

    id: int
    message_id: str
    event_type: str
    body: str
    attempts: int
    status: str
    url: str
    secret: str


_CLAIM = """
WITH due AS (
    SELECT id FROM notifications_statuswebhookcall
    WHERE status = 'queued' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications_statuswebhookcall c
SET attempts = c.attempts + 1,
    status = CASE WHEN c.attempts >= %(max_attempts)s THEN 'dead' ELSE 'queued' END,
    last_error = CASE WHEN c.attempts >= %(max_attempts)s
                      THEN 'no outcome recorded within the lease' ELSE c.last_error END,
    next_attempt_at = CASE WHEN c.attempts >= %(max_attempts)s THEN NULL ELSE %(lease)s END
FROM due, notifications_webhookendpoint w
WHERE c.id = due.id AND w.id = c.endpoint_id
RETURNING c.id, c.message_id, c.event_type, c.payload::text AS body, c.attempts, c.status,
          w.url, w.secret
"""

_RECORD = """
UPDATE notifications_statuswebhookcall c
SET status = v.status, next_attempt_at = v.next_attempt_at, last_status_code = v.code,
    last_error = v.error, sent_at = v.sent_at
FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::int[], %s::text[],
            %s::timestamptz[]) AS v(id, status, next_attempt_at, code, error, sent_at)
WHERE c.id = v.id AND c.status = 'queued' AND c.next_attempt_at = %s
"""


@dataclass(frozen=True)
class Claim:
    lease: datetime  # the claimed rows' next_attempt_at while this sweep holds them
    calls: list[DueCall]  # to send
    expired: int  # rows that were out of attempts: dead


def status_webhooks_send_due(*, limit: int = 100, now: datetime | None = None) -> dict[str, int]:
    """Send up to `limit` due calls; how many ended sent, queued (retry) or dead."""
    started = timezone.now()
    now = now or started
    claim = status_webhook_calls_claim(limit=limit, now=now)
    counts = {"dead": claim.expired} if claim.expired else {}
    if claim.calls:
        outcomes = _send(claim.calls)
        # Backoffs count from when the answers came, on the caller's clock.
        elapsed = timezone.now() - started
        _record(claim.calls, outcomes, now=now + elapsed, lease=claim.lease, counts=counts)
    return counts


def status_webhook_calls_claim(*, limit: int, now: datetime) -> Claim:
    """Take up to `limit` due calls, count their attempt and lease them."""
    cfg = settings.CLARION
    # Long enough for every call of the batch to time out, a few at a time.
    lease_seconds = cfg["PROVIDER_TIMEOUT_SECONDS"] * (math.ceil(limit / SEND_THREADS) + 1) + 30
    lease = now + timedelta(seconds=lease_seconds)
    with transaction.atomic(), connection.cursor() as cursor:
        rows_as(cursor, DueCall).execute(
            _CLAIM,
            {
                "now": now,
                "limit": limit,
                "lease": lease,
                "max_attempts": cfg["DELIVERY_MAX_ATTEMPTS"],
            },
        )
        claimed: list[DueCall] = cursor.fetchall()
    expired = sum(1 for c in claimed if c.status == "dead")
    if expired:
        log.warning("status webhooks: %d calls dead, out of attempts after a lease ended", expired)
    return Claim(lease, [c for c in claimed if c.status == "queued"], expired)


def _send(calls: list[DueCall]) -> list[Outcome]:
    client = guarded_client()
    timeout = settings.CLARION["PROVIDER_TIMEOUT_SECONDS"]

    def send_one(call: DueCall) -> Outcome:
        # Message/Outcome carry the call's id where a delivery's would be.
        message = Message(delivery_id=call.id, channel="webhook", address=call.url, content={})
        return webhook_call(
            client,
            message,
            body=call.body,
            webhook_id=call.message_id,
            secret=call.secret,
            timeout=timeout,
            extra_headers={"Idempotency-Key": call.message_id},
        )

    if len(calls) == 1:
        return [send_one(calls[0])]
    with ThreadPoolExecutor(max_workers=min(SEND_THREADS, len(calls))) as pool:
        return list(pool.map(send_one, calls))


def _record(
    calls: list[DueCall],
    outcomes: list[Outcome],
    *,
    now: datetime,
    lease: datetime,
    counts: dict[str, int],
) -> None:
    cfg = settings.CLARION
    columns: tuple[list, ...] = ([], [], [], [], [], [])
    for call, outcome in zip(calls, outcomes, strict=True):
        next_at = sent_at = None
        error = ""
        if outcome.status == SENT:
            status, sent_at = "sent", now
        elif outcome.status == RETRY and call.attempts < cfg["DELIVERY_MAX_ATTEMPTS"]:
            status = "queued"
            delay = retry_delay(
                call.attempts,
                base=cfg["DELIVERY_RETRY_BASE_SECONDS"],
                cap=cfg["DELIVERY_RETRY_MAX_SECONDS"],
                retry_after=outcome.retry_after,
            )
            next_at = now + timedelta(seconds=delay)
        else:
            status = "dead"
        if status != "sent":
            error = f"{outcome.reason}: {outcome.error}".strip(": ")[:ERROR_KEEP_CHARS]
        counts[status] = counts.get(status, 0) + 1
        for column, value in zip(
            columns, (call.id, status, next_at, outcome.status_code, error, sent_at), strict=True
        ):
            column.append(value)
        if status == "dead":
            log.info(
                "status webhook %s (%s) dead after %d attempts: %s",
                call.message_id,
                call.event_type,
                call.attempts,
                error,
            )
    with connection.cursor() as cursor:
        cursor.execute(_RECORD, [*columns, lease])
