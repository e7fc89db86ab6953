"""Deliveries as producers and operators see them: a keyset page with each
delivery's attempts, and replay of failed and dead ones.

Replay queues deliveries again, due now, with their attempt count back at
zero (the attempt log keeps every earlier try); a sent, delivered or
skipped-by-rule delivery is never replayed, whatever the request names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.core import signing
from django.db import connection

from common.choices import EXTERNAL_CHANNELS, DeliveryStatus
from common.errors import ClarionError, InvalidInput
from common.rows import named_rows

MAX_LIMIT = 500
MAX_REPLAY_IDS = 10_000
REPLAY_CHUNK = 5_000
CURSOR_SALT = "clarion.deliveries-cursor.v1"
ATTEMPTS_SHOWN = 20  # the latest of each delivery on a page
# What replay may touch: failures, dead letters, and skips no rule decided.
REPLAYABLE = (
    "(d.status IN ('failed', 'dead') OR (d.status = 'skipped' AND d.reason = 'no_provider'))"
)
REPLAY_STATUSES = ("failed", "dead")


class BadCursor(ClarionError):
    status = 400
    title = "Bad cursor"


@dataclass(frozen=True)
class DeliveryFilter:
    event: str | None = None
    recipient: str | None = None
    channel: str | None = None
    status: str | None = None


def delivery_filter_parse(params) -> DeliveryFilter:
    """Query parameters to a filter; 400 naming the parameter at fault."""
    errors: dict[str, list[str]] = {}
    event = params.get("event") or None
    if event is not None:
        try:
            event = str(uuid.UUID(event))
        except ValueError:
            errors["event"] = ["Must be an event id."]
    recipient = params.get("recipient") or None
    if recipient is not None and (len(recipient) > 128 or "\x00" in recipient):
        errors["recipient"] = ["Must be a recipient id of at most 128 characters."]
    channel = params.get("channel") or None
    if channel is not None and channel not in EXTERNAL_CHANNELS:
        errors["channel"] = [f"Must be one of {', '.join(EXTERNAL_CHANNELS)}."]
    status = params.get("status") or None
    if status is not None and status not in DeliveryStatus.values:
        errors["status"] = [f"Must be one of {', '.join(DeliveryStatus.values)}."]
    if errors:
        raise ClarionError("Invalid filter.", errors=errors, status=400)
    return DeliveryFilter(event, recipient, channel, status)


def cursor_encode(delivery_id: int) -> str:
    return signing.Signer(salt=CURSOR_SALT).sign(str(delivery_id))


def cursor_decode(cursor: str) -> int:
    try:
        value = int(signing.Signer(salt=CURSOR_SALT).unsign(cursor))
        if not 0 < value < 2**63:
            raise ValueError
        return value
    except (ValueError, signing.BadSignature):
        raise BadCursor(
            "The cursor is not one this API returned.", errors={"cursor": ["Invalid cursor."]}
        ) from None


_PAGE = """
SELECT d.id, n.event_id, r.external_id AS recipient, d.channel, d.status, d.reason,
       d.attempts AS attempt_count, d.next_attempt_at, d.provider, d.created_at, d.updated_at
FROM notifications_delivery d
JOIN notifications_notification n ON n.id = d.notification_id
JOIN notifications_recipient r ON r.id = n.recipient_id
WHERE d.id < %(after)s {where}
ORDER BY d.id DESC
LIMIT %(limit)s
"""

_ATTEMPTS = """
SELECT a.delivery_id, a.created_at, a.provider, a.outcome, a.status_code, a.error, a.duration_ms
FROM unnest(%s::bigint[]) AS p(id)
CROSS JOIN LATERAL (
    SELECT * FROM notifications_deliveryattempt a
    WHERE a.delivery_id = p.id ORDER BY a.id DESC LIMIT %s
) a
ORDER BY a.delivery_id, a.created_at
"""


def deliveries_page(
    *, where: DeliveryFilter, cursor: str | None, limit: int
) -> tuple[list[dict], str | None]:
    """Newest first, `limit` at most; two statements whatever the page size."""
    clauses, params = [], {"after": cursor_decode(cursor) if cursor else 2**63 - 1}
    if where.event:
        clauses.append("n.event_id = %(event)s")
        params["event"] = where.event
    if where.recipient:
        clauses.append("r.external_id = %(recipient)s")
        params["recipient"] = where.recipient
    if where.channel:
        clauses.append("d.channel = %(channel)s")
        params["channel"] = where.channel
    if where.status:
        clauses.append("d.status = %(status)s")
        params["status"] = where.status
    params["limit"] = min(max(limit, 1), MAX_LIMIT) + 1
    sql = _PAGE.format(where="".join(f" AND {c}" for c in clauses))
    with connection.cursor() as db:
        named_rows(db).execute(sql, params)
        rows = db.fetchall()
        more = len(rows) >= params["limit"]
        rows = rows[: params["limit"] - 1]
        attempts: dict[int, list[dict]] = {}
        if rows:
            named_rows(db).execute(_ATTEMPTS, [[row.id for row in rows], ATTEMPTS_SHOWN])
            for a in db.fetchall():
                attempts.setdefault(a.delivery_id, []).append(
                    {
                        "at": a.created_at.isoformat(),
                        "provider": a.provider,
                        "outcome": a.outcome,
                        "status_code": a.status_code,
                        "error": a.error,
                        "duration_ms": a.duration_ms,
                    }
                )
    results = [
        {
            "id": row.id,
            "event": str(row.event_id),
            "recipient": row.recipient,
            "channel": row.channel,
            "status": row.status,
            "reason": row.reason,
            "attempt_count": row.attempt_count,
            "attempts": attempts.get(row.id, []),
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
            "provider": row.provider,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
        }
        for row in rows
    ]
    return results, (cursor_encode(rows[-1].id) if more and rows else None)


@dataclass(frozen=True)
class ReplaySelection:
    ids: list[int] | None = None
    status: str | None = None
    channel: str | None = None


def replay_selection_parse(body: object) -> ReplaySelection:
    """`{"ids": [...]}` or `{"status": "dead"|"failed", "channel"?}`; 422 naming the field."""
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object.", errors={"body": ["Not an object."]})
    unknown = set(body) - {"ids", "status", "channel"}
    if unknown:
        raise InvalidInput(
            "Unknown fields.", errors={name: ["Unknown field."] for name in sorted(unknown)}
        )
    if "ids" in body:
        ids = body["ids"]
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > MAX_REPLAY_IDS
            or not all(type(i) is int and 0 < i < 2**63 for i in ids)
        ):
            raise InvalidInput(
                "ids must be a list of delivery ids.",
                errors={"ids": [f"A list of 1 to {MAX_REPLAY_IDS} delivery ids."]},
            )
        if "status" in body or "channel" in body:
            raise InvalidInput(
                "Give ids, or a status (and channel), not both.",
                errors={"ids": ["Not with status or channel."]},
            )
        return ReplaySelection(ids=sorted(set(ids)))
    status = body.get("status")
    if status not in REPLAY_STATUSES:
        raise InvalidInput(
            "Name the deliveries: ids, or a status.",
            errors={"status": ["Must be dead or failed."]},
        )
    channel = body.get("channel")
    if channel is not None and channel not in EXTERNAL_CHANNELS:
        raise InvalidInput(
            "Unknown channel.", errors={"channel": [f"One of {', '.join(EXTERNAL_CHANNELS)}."]}
        )
    return ReplaySelection(status=status, channel=channel)


def deliveries_replay_count(selection: ReplaySelection) -> int:
    where, params = _replay_where(selection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM notifications_delivery d WHERE {where}", params)
        return cursor.fetchone()[0]


def deliveries_replay_chunks(
    selection: ReplaySelection, *, chunk: int = REPLAY_CHUNK
) -> Iterator[int]:
    """Replay in chunks of ids (each its own statement and commit, so a
    million dead letters never hold one long lock); yields each chunk's count."""
    after = 0
    where, params = _replay_where(selection)
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH picked AS (SELECT d.id FROM notifications_delivery d WHERE {where}"
                " AND d.id > %s ORDER BY d.id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE notifications_delivery d SET status = 'queued', reason = 'replay',"
                " attempts = 0, next_attempt_at = now(), updated_at = now()"
                " FROM picked WHERE d.id = picked.id RETURNING d.id",
                [*params, after, chunk],
            )
            ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return
        after = max(ids)
        yield len(ids)
        if len(ids) < chunk and selection.ids is None:
            return


def deliveries_replay(selection: ReplaySelection) -> int:
    return sum(deliveries_replay_chunks(selection))


def _replay_where(selection: ReplaySelection) -> tuple[str, list]:
    if selection.ids is not None:
        return f"d.id = ANY(%s) AND {REPLAYABLE}", [selection.ids]
    clauses, params = ["d.status = %s"], [selection.status]
    if selection.channel:
        clauses.append("d.channel = %s")
        params.append(selection.channel)
    # Served by delivery_undelivered_idx (channel, id) WHERE status IN ('failed', 'dead').
    return " AND ".join(clauses) + " AND d.status IN ('failed', 'dead')", params
