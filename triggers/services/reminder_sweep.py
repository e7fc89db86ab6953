"""The reminder sweep: releases every due reminder offset as an event.

One statement per chunk takes due offsets (`FOR UPDATE SKIP LOCKED`: two
sweeps at once take different rows), marks them fired and inserts their
events; its transaction commits both or neither. A million due offsets are
SWEEP_REMINDER_CHUNK-sized statements, each in its own transaction, so the
memory a run holds is one chunk's event ids.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection, transaction

from notifications.services.sweep_runs import SweepTally
from triggers.services.events_sql import EVENT_CONSTANTS, EVENT_INSERT, publish_on_commit

NAME = "reminders"

_RELEASE = f"""
WITH due AS (
    SELECT id FROM triggers_reminderfire
    WHERE fired_at IS NULL AND fire_at <= now()
    ORDER BY fire_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
fired AS (
    UPDATE triggers_reminderfire f SET fired_at = now(), event_id = clarion_uuid7()
    FROM due WHERE f.id = due.id
    RETURNING f.event_id, f.reminder_id, f.offset_seconds
),
events AS (
    {EVENT_INSERT}
    SELECT f.event_id, r.api_key_id, r.type_id, r.recipients,
           r.data || jsonb_build_object(
               'reminder', r.key, 'due_at', r.due_at, 'offset_seconds', f.offset_seconds),
           nt.priority, {EVENT_CONSTANTS}
    FROM fired f
    JOIN triggers_reminder r ON r.id = f.reminder_id
    JOIN notifications_notificationtype nt ON nt.id = r.type_id AND nt.retired_at IS NULL
    RETURNING id, priority, recipients -> 'topics' = '[]'::jsonb AS small
)
SELECT (SELECT count(*) FROM fired) AS released, e.id, e.priority, e.small FROM events e
UNION ALL
SELECT (SELECT count(*) FROM fired), NULL, NULL, NULL
"""


def reminders_sweep(tally: SweepTally, *, sessions: int | None = None) -> SweepTally:
    """Release due offsets until none is due; counts on the tally.

    With a backlog (a chunk came back full) the rest is released by
    SWEEP_REMINDER_SESSIONS database sessions at once: the statement is all
    PostgreSQL's work, and SKIP LOCKED gives each session other rows."""
    limit = settings.CLARION["SWEEP_REMINDER_CHUNK"]
    sessions = sessions or settings.CLARION["SWEEP_REMINDER_SESSIONS"]
    released, produced = _release_chunk(limit)
    tally.examined += released
    tally.produced += produced
    if released < limit or sessions <= 1:
        if released == limit:
            _release_all(limit, tally)
        return tally
    lock = threading.Lock()

    def drain() -> None:
        try:
            local = SweepTally()
            _release_all(limit, local)
            with lock:
                tally.examined += local.examined
                tally.produced += local.produced
        finally:
            connection.close()  # this thread's own session

    with ThreadPoolExecutor(max_workers=sessions) as pool:
        for future in [pool.submit(drain) for _ in range(sessions)]:
            future.result()
    return tally


def _release_all(limit: int, tally: SweepTally) -> None:
    while True:
        released, produced = _release_chunk(limit)
        tally.examined += released
        tally.produced += produced
        if released < limit:
            return


def _release_chunk(limit: int) -> tuple[int, int]:
    """One statement in one transaction: (offsets released, events written)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RELEASE, {"limit": limit})
        rows = cursor.fetchall()
        released = rows[0][0] if rows else 0
        events = [(event_id, priority, small) for _, event_id, priority, small in rows if event_id]
        publish_on_commit(events)
    return released, len(events)
