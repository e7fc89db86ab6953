"""Scenarios `sweep_saved_searches`, `sweep_scaling` and `sweep_reminders`.

sweep_saved_searches: 100,000 recipients x 2 saved searches against 50,000
new items of a load board (--quick: 10,000 x 2 against 10,000), the sweep run
in-process three times (between runs its cursor, fires and events are
removed, so each run sees the same 50,000 new items). Reported: the sweep's
seconds (median, min-max), its statements (Django's CaptureQueriesContext:
every statement the sweep sends), events produced, and as the baseline the
hand-written SQL join that counts the same matches over typed tables of the
same data (origin = origin AND dest = ANY(dests) AND ...), timed in the same
run; its count must equal the sweep's events. Goal: < 30 s, <= 50 statements.

The data: 500 origin and 500 destination cities, 5 kinds of equipment.
95% of the searches are lanes (an origin, 1-3 destinations, 1-2 kinds of
equipment, a minimum rate), 5% watch a whole origin (1-2 kinds of
equipment, a rate range). Items: an origin, a destination, one kind of
equipment, a rate of 1.00-4.00, weight and pickup date.

sweep_scaling: 10,000 new items against 10,000, 100,000 and 1,000,000
searches (--quick: 10,000 and 100,000); sweep seconds per size, and the
growth against the trigger count (linear: 10x the searches, <= 10x the time).

sweep_reminders: 1,000,000 reminder offsets due at once (--quick 100,000),
released by one reminder sweep; goal: within one sweep interval
(CLARION_REMINDER_SWEEP_INTERVAL_SECONDS, 30 s). Statements reported.
"""

from __future__ import annotations

import random
import statistics
import time

import orjson

from bench import data
from bench.common import metric, say
from bench.env import BenchEnv, django_setup, vacuum_if_dirty

KIND = "bench.load"
TYPE_KEY = "bench.load.match"
REMINDER_TYPE = "bench.deadline"
PREFIX = "bench-trg-"
CITIES = 500
EQUIPMENT = ["van", "reefer", "flatbed", "stepdeck", "tanker"]
GOAL_SECONDS = 30.0
GOAL_STATEMENTS = 50
TYPE_BODY = {
    "channels": ["in_app"],
    "category": "bench",
    "templates": {"in_app": {"en": {"title": "{{ origin }} -> {{ destination }}"}}},
}


def _ensure_types() -> None:
    from notifications.services import types

    types.notification_type_put(key=TYPE_KEY, body=TYPE_BODY)
    types.notification_type_put(
        key=REMINDER_TYPE,
        body={**TYPE_BODY, "templates": {"in_app": {"en": {"title": "due"}}}},
    )


def _ensure_recipients(env: BenchEnv, n: int) -> None:
    with env.connect() as conn:
        have = conn.execute(
            "SELECT count(*) FROM notifications_recipient WHERE external_id LIKE %s",
            (f"{PREFIX}%",),
        ).fetchone()[0]
        if have >= n:
            return
        say(f"building {n:,} recipients")
        conn.execute(
            "INSERT INTO notifications_recipient (external_id, email, phone, locale, timezone,"
            " data, created_at, updated_at)"
            " SELECT %s || g, '', '', '', '', '{}', now(), now() FROM generate_series(0, %s) g"
            " ON CONFLICT (external_id) DO NOTHING",
            (PREFIX, n - 1),
        )


def _city(rng: random.Random) -> str:
    return f"city-{rng.randrange(CITIES)}"


def _search(rng: random.Random) -> dict:
    if rng.random() < 0.95:
        return {
            "origin": _city(rng),
            "destination": sorted({_city(rng) for _ in range(rng.randint(1, 3))}),
            "equipment": rng.sample(EQUIPMENT, rng.randint(1, 2)),
            "rate": {"gte": round(rng.uniform(1.5, 3.0), 2)},
        }
    low = round(rng.uniform(1.0, 2.5), 2)
    return {
        "origin": _city(rng),
        "equipment": rng.sample(EQUIPMENT, rng.randint(1, 2)),
        "rate": {"gte": low, "lte": round(low + 1.0, 2)},
    }


def _copy(conn, table: str, columns: str, rows) -> None:
    with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _clear_triggers(env: BenchEnv) -> None:
    with env.connect() as conn:
        conn.execute(
            "DELETE FROM triggers_triggerfire f USING triggers_trigger t"
            " WHERE f.trigger_id = t.id AND t.kind = %s",
            (KIND,),
        )
        conn.execute("DELETE FROM triggers_triggeranchor WHERE kind = %s", (KIND,))
        conn.execute("DELETE FROM triggers_trigger WHERE kind = %s", (KIND,))
        # A million deleted searches leave their dead rows in the lookup index:
        # the next size must not pay for them.
        for table in ("triggers_triggerfire", "triggers_triggeranchor", "triggers_trigger"):
            conn.execute(f"VACUUM ANALYZE {table}")


def load_triggers(env: BenchEnv, recipients: int, per_recipient: int, seed: int = 7) -> int:
    """recipients x per_recipient searches, with their anchors, by COPY."""
    from triggers.matching import anchor_of

    _clear_triggers(env)
    _ensure_recipients(env, recipients)
    n = recipients * per_recipient
    say(f"building {n:,} saved searches ({recipients:,} recipients x {per_recipient})")
    rng = random.Random(seed)
    with env.connect() as conn:
        type_id = data.type_id(env, TYPE_KEY)
        recipient_ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM notifications_recipient WHERE external_id LIKE %s"
                " ORDER BY id LIMIT %s",
                (f"{PREFIX}%", recipients),
            )
        ]
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT nextval('triggers_trigger_id_seq') FROM generate_series(1, %s)", (n,)
            )
        ]
        triggers, anchors = [], []
        for index, trigger_id in enumerate(ids):
            match = _search(rng)
            recipient_id = recipient_ids[index // per_recipient]
            triggers.append(
                (
                    trigger_id,
                    recipient_id,
                    f"s{index % per_recipient}",
                    KIND,
                    orjson.dumps(match).decode(),
                    True,
                    False,
                    type_id,
                )
            )
            anchor = anchor_of(match)
            for key in anchor.keys:
                anchors.append(
                    (trigger_id, KIND, list(anchor.attributes), orjson.dumps(list(key)).decode())
                )
        _copy(
            conn,
            "triggers_trigger",
            "id, recipient_id, key, kind, match, on_created, on_updated, type_id,"
            " created_at, updated_at",
            (row + (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),) * 2 for row in triggers),
        )
        _copy(conn, "triggers_triggeranchor", "trigger_id, kind, attributes, key", anchors)
        conn.execute("ANALYZE triggers_trigger")
        conn.execute("ANALYZE triggers_triggeranchor")
    say(f"  {n:,} searches, {len(anchors):,} anchor rows")
    return n


def load_items(env: BenchEnv, n: int, seed: int = 11) -> None:
    """n new items through the items service (1,000 per statement, as the API writes them)."""
    from triggers.services.items import items_put, parse_items

    with env.connect() as conn:
        conn.execute(
            "DELETE FROM triggers_triggerfire f USING triggers_item i"
            " WHERE f.item_id = i.id AND i.kind = %s",
            (KIND,),
        )
        conn.execute("DELETE FROM triggers_item WHERE kind = %s", (KIND,))
    say(f"posting {n:,} items")
    rng = random.Random(seed)
    for start in range(0, n, 1000):
        batch = [
            {
                "kind": KIND,
                "id": f"L-{i}",
                "attributes": {
                    "origin": _city(rng),
                    "destination": _city(rng),
                    "equipment": rng.choice(EQUIPMENT),
                    "rate": round(rng.uniform(1.0, 4.0), 2),
                    "weight": rng.randrange(5_000, 45_000),
                    "pickup": f"2026-12-{rng.randint(3, 20):02d}",
                },
            }
            for i in range(start, min(start + 1000, n))
        ]
        items_put(parse_items({"items": batch}))
    with env.connect() as conn:
        conn.execute("ANALYZE triggers_item")


def _reset_sweep(env: BenchEnv) -> None:
    """As if the sweep had never run: no cursor, no fires, no events of its type."""
    with env.connect() as conn:
        conn.execute("DELETE FROM triggers_sweepcursor WHERE name = 'saved_searches'")
        conn.execute(
            "DELETE FROM triggers_triggerfire f USING triggers_trigger t"
            " WHERE f.trigger_id = t.id AND t.kind = %s",
            (KIND,),
        )
    data.delete_events_of_type(env, TYPE_KEY)
    vacuum_if_dirty(env, "triggers_triggerfire")
    vacuum_if_dirty(env, "notifications_event")
    data.purge_queues(env)


def sweep_once(env: BenchEnv) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from notifications.services.sweep_runs import SweepTally
    from triggers.services.saved_search_sweep import saved_searches_sweep

    _reset_sweep(env)
    with CaptureQueriesContext(connection) as queries:
        t0 = time.perf_counter()
        tally = saved_searches_sweep(SweepTally())
        seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 3),
        "statements": len(queries.captured_queries),
        "items": tally.examined,
        "events": tally.produced,
    }


_RAW_TABLES = f"""
DROP TABLE IF EXISTS raw_items, raw_lanes, raw_origins;
CREATE UNLOGGED TABLE raw_items AS
    SELECT id, attributes->>'origin' AS origin, attributes->>'destination' AS dest,
           attributes->>'equipment' AS equipment, (attributes->>'rate')::numeric AS rate
    FROM triggers_item WHERE kind = '{KIND}';
CREATE UNLOGGED TABLE raw_lanes AS
    SELECT id, match->>'origin' AS origin,
           ARRAY(SELECT jsonb_array_elements_text(match->'destination')) AS dests,
           ARRAY(SELECT jsonb_array_elements_text(match->'equipment')) AS equipment,
           (match->'rate'->>'gte')::numeric AS min_rate
    FROM triggers_trigger WHERE kind = '{KIND}' AND match ? 'destination';
CREATE UNLOGGED TABLE raw_origins AS
    SELECT id, match->>'origin' AS origin,
           ARRAY(SELECT jsonb_array_elements_text(match->'equipment')) AS equipment,
           (match->'rate'->>'gte')::numeric AS min_rate,
           (match->'rate'->>'lte')::numeric AS max_rate
    FROM triggers_trigger WHERE kind = '{KIND}' AND NOT match ? 'destination';
CREATE INDEX ON raw_lanes (origin);
CREATE INDEX ON raw_origins (origin);
ANALYZE raw_items; ANALYZE raw_lanes; ANALYZE raw_origins;
"""

_RAW_JOIN = """
SELECT (SELECT count(*) FROM raw_items i JOIN raw_lanes s
          ON s.origin = i.origin AND i.dest = ANY(s.dests)
         AND i.equipment = ANY(s.equipment) AND i.rate >= s.min_rate)
     + (SELECT count(*) FROM raw_items i JOIN raw_origins s
          ON s.origin = i.origin AND i.equipment = ANY(s.equipment)
         AND i.rate >= s.min_rate AND i.rate <= s.max_rate)
"""


def raw_join(env: BenchEnv) -> tuple[float, int]:
    """The hand-written join over typed tables of the same data: (seconds, matches)."""
    with env.connect() as conn:
        t0 = time.perf_counter()
        (count,) = conn.execute(_RAW_JOIN).fetchone()
        return time.perf_counter() - t0, count


def run_saved_searches(env: BenchEnv, opts) -> dict:
    recipients, items = (10_000, 10_000) if opts.quick else (100_000, 50_000)
    django_setup()
    _ensure_types()
    triggers = load_triggers(env, recipients, 2)
    load_items(env, items)
    with env.connect() as conn:
        conn.execute(_RAW_TABLES)
    runs, raws = [], []
    for attempt in range(3):
        raw_seconds, raw_count = raw_join(env)
        raws.append({"seconds": round(raw_seconds, 3), "matches": raw_count})
        result = sweep_once(env)
        runs.append(result)
        say(
            f"sweep #{attempt + 1}: {result['items']:,} items x {triggers:,} searches ->"
            f" {result['events']:,} events in {result['seconds']:.2f}s,"
            f" {result['statements']} statements; raw join {raw_seconds:.2f}s"
            f" ({raw_count:,} matches)"
        )
    _reset_sweep(env)
    with env.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS raw_items, raw_lanes, raw_origins")
    seconds = [r["seconds"] for r in runs]
    raw_seconds = [r["seconds"] for r in raws]
    ratios = [s / r for s, r in zip(seconds, raw_seconds)]
    same = all(r["events"] == q["matches"] for r, q in zip(runs, raws))
    spread = f"{min(seconds):.2f}-{max(seconds):.2f}"
    return {
        "metrics": [
            metric(
                f"saved-search sweep, {triggers:,} searches x {items:,} new items"
                f" (median of 3: {spread})",
                round(statistics.median(seconds), 2),
                "s",
                below=GOAL_SECONDS,
            ),
            metric(
                "statements per sweep (max of 3)",
                max(r["statements"] for r in runs),
                "",
                at_most=GOAL_STATEMENTS,
            ),
            metric("events produced", runs[0]["events"], ""),
            metric(
                "raw SQL join over typed tables, same matches"
                f" (median of 3: {min(raw_seconds):.2f}-{max(raw_seconds):.2f})",
                round(statistics.median(raw_seconds), 3),
                "s",
            ),
            metric(
                f"ratio sweep / raw join (median of 3: {min(ratios):.1f}-{max(ratios):.1f})",
                round(statistics.median(ratios), 2),
                "x",
            ),
            metric(
                "sweep's events == raw join's matches (all runs)",
                str(same),
                "",
                goal_text="True",
            ),
        ],
        "details": {"runs": runs, "raw_join": raws, "searches": triggers, "items": items},
    }


def run_scaling(env: BenchEnv, opts) -> dict:
    sizes = [10_000, 100_000] if opts.quick else [10_000, 100_000, 1_000_000]
    items = 10_000
    django_setup()
    _ensure_types()
    load_items(env, items)
    rows = []
    for size in sizes:
        load_triggers(env, size // 2, 2, seed=size)
        result = sweep_once(env)
        result["searches"] = size
        rows.append(result)
        say(
            f"{size:,} searches x {items:,} items: {result['seconds']:.2f}s,"
            f" {result['events']:,} events, {result['statements']} statements"
        )
    _reset_sweep(env)
    _clear_triggers(env)
    metrics = [
        metric(f"sweep, {r['searches']:,} searches x {items:,} items", r["seconds"], "s")
        for r in rows
    ]
    for small, large in zip(rows, rows[1:]):
        growth = large["seconds"] / max(small["seconds"], 1e-6)
        factor = large["searches"] / small["searches"]
        metrics.append(
            metric(
                f"time growth {small['searches']:,} -> {large['searches']:,} searches"
                f" ({factor:.0f}x)",
                round(growth, 2),
                "x",
                at_most=factor,
            )
        )
    return {"metrics": metrics, "details": {"runs": rows}}


def run_reminders(env: BenchEnv, opts) -> dict:
    n = 100_000 if opts.quick else 1_000_000
    django_setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from notifications.services.sweep_runs import SweepTally
    from triggers.services.reminder_sweep import reminders_sweep

    _ensure_types()
    interval = settings.CLARION["REMINDER_SWEEP_INTERVAL_SECONDS"]
    data.delete_events_of_type(env, REMINDER_TYPE)
    type_id = data.type_id(env, REMINDER_TYPE)
    say(f"building {n:,} reminders, one offset each, all due")
    with env.connect() as conn:
        conn.execute("DELETE FROM triggers_reminderfire")
        conn.execute("DELETE FROM triggers_reminder WHERE key LIKE 'bench-%%'")
        conn.execute(
            "INSERT INTO triggers_reminder (api_key_id, key, type_id, recipients, data, due_at,"
            " offsets, created_at, updated_at)"
            " SELECT NULL, 'bench-' || g, %s,"
            " jsonb_build_object('ids', jsonb_build_array(%s || (g %% 100000)),"
            " 'topics', '[]'::jsonb),"
            " jsonb_build_object('invoice', g), now() + interval '1 hour', '{3600}', now(), now()"
            " FROM generate_series(1, %s) g",
            (type_id, PREFIX, n),
        )
        conn.execute(
            "INSERT INTO triggers_reminderfire (reminder_id, offset_seconds, fire_at)"
            " SELECT id, 3600, now() - interval '1 second' FROM triggers_reminder"
            " WHERE key LIKE 'bench-%%'"
        )
        conn.execute("VACUUM ANALYZE triggers_reminder")
        conn.execute("VACUUM ANALYZE triggers_reminderfire")
    data.purge_queues(env)
    with CaptureQueriesContext(connection) as queries:
        t0 = time.perf_counter()
        tally = reminders_sweep(SweepTally())
        seconds = time.perf_counter() - t0
    say(
        f"released {tally.produced:,} of {n:,} due offsets in {seconds:.1f}s"
        f" ({tally.produced / seconds:,.0f}/s), {len(queries.captured_queries)} statements"
    )
    data.purge_queues(env)
    data.delete_events_of_type(env, REMINDER_TYPE)
    with env.connect() as conn:
        conn.execute("DELETE FROM triggers_reminderfire")
        conn.execute("DELETE FROM triggers_reminder WHERE key LIKE 'bench-%%'")
    return {
        "metrics": [
            metric(
                f"reminder sweep, {n:,} due offsets released",
                round(seconds, 2),
                "s",
                at_most=interval,
                goal_text=f"<= {interval:.0f} (one sweep interval)",
            ),
            metric("events produced", tally.produced, "", at_least=n),
            metric("released per second", round(tally.produced / seconds), "ev/s"),
            metric(
                "statements of the calling session (each other session: one per chunk)",
                len(queries.captured_queries),
                "",
            ),
        ],
        "details": {"seconds": seconds, "statements": len(queries.captured_queries)},
    }
