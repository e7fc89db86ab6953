"""The unread-escalation sweep: an in-app notification of a type with an
`escalation` that is still unread `after_seconds` after it was created gets
deliveries on the escalation's channels.

Per escalating type, a cursor over notification ids: each chunk is one
statement that reads the notifications past the cursor up to the first one
not due yet, keeps the unread visible ones, and inserts their deliveries with
the recipient's preferences and quiet hours applied (the fan-out's own SQL
pieces, notifications/services/fanout_sql.py). The unique (notification,
channel) index makes a second run insert nothing, and a channel the type
already delivers on is not sent twice. Reading first cancels it: a read
notification gets no escalation, and one read after its escalation was
queued has it skipped (`read`), as any waiting delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from notifications.services.fanout_sql import DECIDED, OFF, QUIET_RELEASE_AT, SETTINGS
from notifications.services.sweep_runs import SweepTally
from triggers.services.sweep_locks import sweep_lock

NAME = "escalations"

_TYPES = """
SELECT id, key, category, priority, required_channels, escalation
FROM notifications_notificationtype
WHERE escalation IS NOT NULL AND retired_at IS NULL
ORDER BY id
"""

_ESCALATE = f"""
WITH horizon AS (
    -- The first notification past the cursor that is not due yet: the chunk
    -- stops before it, so the cursor never passes one still to come due.
    SELECT coalesce(min(id), 9223372036854775807) AS below FROM (
        SELECT n.id FROM notifications_notification n
        JOIN notifications_event e ON e.id = n.event_id
        WHERE n.id > %(after)s AND e.type_id = %(type_id)s
          AND n.created_at > %(now)s::timestamptz - make_interval(secs => %(delay)s)
        ORDER BY n.id
        LIMIT 1
    ) young
),
due AS MATERIALIZED (
    SELECT n.id, n.recipient_id, n.read_at, n.archived_at, n.visible
    FROM notifications_notification n
    JOIN notifications_event e ON e.id = n.event_id
    WHERE n.id > %(after)s AND n.id < (SELECT below FROM horizon) AND e.type_id = %(type_id)s
    ORDER BY n.id
    LIMIT %(limit)s
),
unread AS MATERIALIZED (
    SELECT id, recipient_id FROM due
    WHERE read_at IS NULL AND archived_at IS NULL AND visible
),
decided AS ({DECIDED.format(rows="unread")}),
page_settings AS ({SETTINGS.format(rows="unread")}),
rules AS (
    SELECT u.id AS notification_id, u.recipient_id, {QUIET_RELEASE_AT} AS release_at
    FROM unread u LEFT JOIN page_settings s ON s.recipient_id = u.recipient_id
),
deliveries AS (
    INSERT INTO notifications_delivery
        (notification_id, channel, status, reason, address, attempts, next_attempt_at,
         created_at, updated_at)
    SELECT rules.notification_id, ch,
           CASE WHEN {OFF} THEN 'skipped' ELSE 'queued' END,
           CASE WHEN {OFF} THEN 'preference'
                WHEN rules.release_at IS NOT NULL THEN 'quiet_hours' ELSE 'escalation' END,
           '', 0, coalesce(rules.release_at, %(now)s::timestamptz), now(), now()
    FROM rules CROSS JOIN unnest(%(channels)s::text[]) AS ch
    LEFT JOIN decided ON decided.recipient_id = rules.recipient_id AND decided.channel = ch
    ON CONFLICT (notification_id, channel) DO NOTHING
    RETURNING status
)
SELECT (SELECT count(*) FROM due) AS examined, (SELECT max(id) FROM due) AS last_id,
       (SELECT count(*) FROM deliveries WHERE status = 'queued') AS queued
"""

_ADVANCE = """
INSERT INTO triggers_sweepcursor (name, position, updated_at) VALUES (%s, %s, now())
ON CONFLICT (name) DO UPDATE SET position = GREATEST(triggers_sweepcursor.position,
    EXCLUDED.position), updated_at = now()
"""


@dataclass(frozen=True)
class EscalatingType:
    id: int
    key: str
    category: str
    priority: str
    required_channels: list[str]
    escalation: dict


def escalations_sweep(tally: SweepTally, *, now=None) -> SweepTally:
    """Escalate every unread notification past its type's delay; counts on the tally."""
    now = now or timezone.now()
    with sweep_lock(NAME) as held:
        if not held:
            tally.skipped = True
            return tally
        with connection.cursor() as cursor:
            cursor.execute(_TYPES)
            # Django reads jsonb as text in raw queries (JSONField decodes it).
            types = [
                EscalatingType(
                    *row[:5], orjson.loads(row[5]) if isinstance(row[5], str) else row[5]
                )
                for row in cursor.fetchall()
            ]
        for escalating in types:
            _escalate_type(escalating, now, tally)
    return tally


def _cursor_name(type_id: int) -> str:
    return f"escalation:{type_id}"


def _escalate_type(escalating: EscalatingType, now, tally: SweepTally) -> None:
    name = _cursor_name(escalating.id)
    limit = settings.CLARION["SWEEP_ESCALATION_CHUNK"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT position FROM triggers_sweepcursor WHERE name = %s", [name])
        row = cursor.fetchone()
    after = row[0] if row else 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _ESCALATE,
                {
                    "after": after,
                    "type_id": escalating.id,
                    "type_key": escalating.key,
                    "category": escalating.category,
                    "required": escalating.required_channels,
                    "critical": escalating.priority == "critical",
                    "delay": escalating.escalation["after_seconds"],
                    "channels": escalating.escalation["channels"],
                    "now": now,
                    "limit": limit,
                },
            )
            examined, last_id, queued = cursor.fetchone()
            if last_id is not None:
                cursor.execute(_ADVANCE, [name, last_id])
                after = last_id
        tally.examined += examined
        tally.produced += queued
        if examined < limit:
            return
