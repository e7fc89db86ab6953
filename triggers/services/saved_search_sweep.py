"""The saved-search sweep: items created or changed since the last run,
matched against every trigger of their kind in SQL, one event per (trigger,
item version).

Per chunk of items (by change position) one statement finds the candidates
through the anchors' index, checks each candidate's whole `match`
(clarion_trigger_matches), inserts the fires — the unique (trigger, item,
version) index makes a second sweep over the same items insert nothing —
and inserts the events of the fires it did insert. The cursor moves in the
same transaction. The statement count grows with the number of chunks
(items / SWEEP_ITEM_CHUNK), never with the number of triggers or matches.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from notifications.services.sweep_runs import SweepTally
from triggers.services.events_sql import EVENT_CONSTANTS, EVENT_INSERT, publish_on_commit
from triggers.services.items import committed_position
from triggers.services.sweep_locks import sweep_lock

NAME = "saved searches"
CURSOR = "saved_searches"

_BOUNDARY = """
SELECT max(changed_seq), count(*) FROM (
    SELECT changed_seq FROM triggers_item
    WHERE changed_seq > %(after)s AND changed_seq <= %(upto)s
    ORDER BY changed_seq LIMIT %(limit)s
) chunk
"""

# An item created after the cursor is "created" (even if also updated since:
# the sweep sees it once, as new); one created before is "updated".
_MATCH = f"""
WITH chunk AS (
    SELECT id, kind, external_id, version,
           attributes || jsonb_build_object('id', external_id) AS attrs,
           attributes, created_seq > %(after)s AS is_new
    FROM triggers_item
    WHERE changed_seq > %(after)s AND changed_seq <= %(until)s
      AND (expires_at IS NULL OR expires_at > now())
),
-- The anchor shapes in use for the chunk's kinds (a handful: ["destination",
-- "equipment", "origin"], ["id"], []), then each item's keys for each shape:
-- the product of its values of those attributes, in the anchors' order.
shapes AS (
    SELECT DISTINCT a.kind, a.attributes FROM triggers_triggeranchor a
    WHERE a.kind IN (SELECT DISTINCT kind FROM chunk)
),
item_keys AS (
    SELECT c.id AS item_id, s.kind, s.attributes, k.key
    FROM chunk c JOIN shapes s ON s.kind = c.kind
    CROSS JOIN LATERAL (
        SELECT '[]'::jsonb AS key WHERE cardinality(s.attributes) = 0
        UNION ALL
        SELECT jsonb_build_array(v1) FROM clarion_values(c.attrs -> s.attributes[1]) v1
        WHERE cardinality(s.attributes) = 1
        UNION ALL
        SELECT jsonb_build_array(v1, v2)
        FROM clarion_values(c.attrs -> s.attributes[1]) v1,
             clarion_values(c.attrs -> s.attributes[2]) v2
        WHERE cardinality(s.attributes) = 2
        UNION ALL
        SELECT jsonb_build_array(v1, v2, v3)
        FROM clarion_values(c.attrs -> s.attributes[1]) v1,
             clarion_values(c.attrs -> s.attributes[2]) v2,
             clarion_values(c.attrs -> s.attributes[3]) v3
        WHERE cardinality(s.attributes) = 3
    ) k
),
candidates AS (
    SELECT DISTINCT a.trigger_id, k.item_id
    FROM item_keys k
    JOIN triggers_triggeranchor a
      ON a.kind = k.kind AND a.attributes = k.attributes AND a.key = k.key
),
matched AS (
    SELECT t.id AS trigger_id, c.id AS item_id,
           CASE WHEN c.is_new THEN 0 ELSE c.version END AS item_version,
           clarion_uuid7() AS event_id
    FROM candidates x
    JOIN triggers_trigger t ON t.id = x.trigger_id
    JOIN chunk c ON c.id = x.item_id
    WHERE (CASE WHEN c.is_new THEN t.on_created ELSE t.on_updated END)
      AND clarion_trigger_matches(t.match, c.attrs)
),
fired AS (
    INSERT INTO triggers_triggerfire (trigger_id, item_id, item_version, event_id, fired_at)
    SELECT trigger_id, item_id, item_version, event_id, now() FROM matched
    ON CONFLICT DO NOTHING
    RETURNING trigger_id, item_id, event_id
),
events AS (
    {EVENT_INSERT}
    SELECT f.event_id, NULL, t.type_id,
           jsonb_build_object('ids', jsonb_build_array(r.external_id), 'topics', '[]'::jsonb),
           c.attributes || jsonb_build_object(
               'item_id', c.external_id, 'kind', c.kind, 'trigger', t.key),
           nt.priority, {EVENT_CONSTANTS}
    FROM fired f
    JOIN triggers_trigger t ON t.id = f.trigger_id
    JOIN chunk c ON c.id = f.item_id
    JOIN notifications_recipient r ON r.id = t.recipient_id
    JOIN notifications_notificationtype nt ON nt.id = t.type_id AND nt.retired_at IS NULL
    RETURNING id, priority
)
SELECT (SELECT count(*) FROM candidates) AS candidates, e.id, e.priority FROM events e
UNION ALL
SELECT (SELECT count(*) FROM candidates), NULL, NULL
"""

_ADVANCE = """
INSERT INTO triggers_sweepcursor (name, position, updated_at) VALUES (%s, %s, now())
ON CONFLICT (name) DO UPDATE SET position = GREATEST(triggers_sweepcursor.position,
    EXCLUDED.position), updated_at = now()
"""


@dataclass
class ChunkResult:
    items: int
    candidates: int
    events: int


def saved_searches_sweep(tally: SweepTally) -> SweepTally:
    """Match every item changed since the cursor; counts on the tally."""
    with sweep_lock(NAME) as held:
        if not held:
            tally.skipped = True
            return tally
        upto = committed_position()
        after = _cursor()
        chunk = settings.CLARION["SWEEP_ITEM_CHUNK"]
        while after < upto:
            result, after = _sweep_chunk(after, upto, chunk)
            tally.examined += result.items
            tally.produced += result.events
            if not result.items:
                break
    return tally


def _cursor() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT position FROM triggers_sweepcursor WHERE name = %s", [CURSOR])
        row = cursor.fetchone()
    return row[0] if row else 0


def _sweep_chunk(after: int, upto: int, limit: int) -> tuple[ChunkResult, int]:
    """One chunk in one transaction: boundary, match-fire-insert, cursor."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_BOUNDARY, {"after": after, "upto": upto, "limit": limit})
        until, items = cursor.fetchone()
        if until is None:
            _advance(cursor, upto)
            return ChunkResult(0, 0, 0), upto
        cursor.execute(_MATCH, {"after": after, "until": until})
        rows = cursor.fetchall()
        candidates = rows[0][0] if rows else 0
        events = [(event_id, priority, True) for _, event_id, priority in rows if event_id]
        _advance(cursor, until)
        publish_on_commit(events)
    return ChunkResult(items, candidates, len(events)), until


def _advance(cursor, position: int) -> None:
    cursor.execute(_ADVANCE, [CURSOR, position])
