"""Scenario `inbox`: inbox first page and unread count on a 5,000,000-row table.

Data set (built once, set-based, reused): 50,000 recipients x 100 events, one
notification per (event, recipient) inserted event by event in recipient
order, exactly the physical layout fan-out produces; ~30% unread. Then
VACUUM ANALYZE. Measured for random recipients:

* in-process through Django: `inbox_page(recipient_id, status=None, cursor=None,
  limit=20)` and `unread_count(recipient_id)`, p50/p95/p99 over >= 2,000 calls;
* over HTTP: GET /api/v1/inbox and /api/v1/inbox/unread-count with recipient
  tokens, a short load at concurrency 1 and 8;
* EXPLAIN (ANALYZE, BUFFERS) of the SQL each function runs, for one recipient.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

from bench import data
from bench.common import Timer, latency_summary_ms, loadavg, metric, say, warn
from bench.env import (
    BenchEnv,
    autovacuum_running,
    checkpoint,
    db_activity,
    django_setup,
    meta_get,
    meta_put,
    vacuum_if_dirty,
)
from bench.load import pick_generator, run_load
from bench.procs import REGISTRY, http_json, start_web

TYPE_KEY = "bench.inbox"
GOAL_P95_MS = 5.0


def _sizes(quick: bool) -> tuple[int, int]:
    return (10_000, 50) if quick else (50_000, 100)


def _prefix(tag: str) -> str:
    return f"bench-inbox-{tag}-"


def ensure_dataset(env: BenchEnv, recipients: int, per: int) -> dict:
    tag = f"{recipients}x{per}"
    meta_key = f"inbox:{tag}"
    expected = recipients * per
    meta = meta_get(env, meta_key)
    if meta:
        with env.connect() as conn:
            have = conn.execute(
                "SELECT count(*) FROM notifications_notification WHERE event_id = ANY(%s::uuid[])",
                (meta["event_ids"],),
            ).fetchone()[0]
        if have == expected:
            say(f"inbox data set {tag} present ({have:,} notifications); reusing it")
            return meta
        say(f"inbox data set {tag} is incomplete ({have:,}/{expected:,}); rebuilding it")
    return _build(env, recipients, per, tag, meta_key)


def _build(env: BenchEnv, recipients: int, per: int, tag: str, meta_key: str) -> dict:
    from common.choices import EventStatus
    from common.ids import uuid7
    from notifications.models import Event
    from notifications.services import types

    prefix = _prefix(tag)
    types.notification_type_put(
        key=TYPE_KEY,
        body={
            "channels": ["in_app"],
            "category": "bench",
            "templates": {"in_app": {"en": {"title": TYPE_KEY}}},
        },
    )
    data.delete_events_of_type(
        env, TYPE_KEY, extra_where="e.data->>'bench_dataset' = %s", params=(tag,)
    )
    say(
        f"building inbox data set {tag}: {recipients:,} recipients x {per} notifications"
        f" = {recipients * per:,} rows"
    )
    total_timer = Timer().__enter__()
    with env.connect() as conn:
        conn.execute("SET synchronous_commit = off")
        try:
            # Skip FK trigger checks while loading rows that are consistent by construction.
            conn.execute("SET session_replication_role = replica")
            fk_checks = False
        except Exception:  # noqa: BLE001 - not a superuser: keep the checks
            fk_checks = True
        conn.execute(
            """
            INSERT INTO notifications_recipient
                (external_id, email, phone, locale, timezone, data, created_at, updated_at)
            SELECT %s || g, '', '', '', '', '{}', now(), now() FROM generate_series(1, %s::int) g
            ON CONFLICT (external_id) DO NOTHING
            """,
            (prefix, recipients),
        )
        conn.execute("DROP TABLE IF EXISTS bench_inbox_recipients")
        conn.execute(
            "CREATE TEMP TABLE bench_inbox_recipients AS"
            " SELECT r.id FROM generate_series(1, %s::int) g"
            " JOIN notifications_recipient r ON r.external_id = %s || g",
            (recipients, prefix),
        )
        conn.execute("CREATE INDEX ON bench_inbox_recipients (id)")
        type_id = conn.execute(
            "SELECT id FROM notifications_notificationtype WHERE key = %s", (TYPE_KEY,)
        ).fetchone()[0]

        # The events, through the ORM (so defaults follow the model), then backdated.
        events = [
            Event(
                id=uuid7(),
                type_id=type_id,
                recipients={"ids": [], "topics": [f"bench.inbox.{tag}"]},
                actor=f"bench-actor-{k % 17}",
                priority="normal",
                status=EventStatus.DONE,
                recipient_count=recipients,
                data={
                    "bench_dataset": tag,
                    "post_id": 1000 + k,
                    "post_title": f"Weekly digest #{k}",
                    "comment": "A few words about what happened this week.",
                    "url": f"https://example.com/p/{k}",
                },
            )
            for k in range(per)
        ]
        Event.objects.bulk_create(events)
        event_ids = [str(e.id) for e in events]
        now_row = conn.execute("SELECT now()").fetchone()[0]
        created = [now_row - timedelta(hours=6 * (per - k)) for k in range(per)]
        conn.execute(
            "UPDATE notifications_event e"
            " SET created_at = t.c, finished_at = t.c, enqueued_at = t.c"
            " FROM unnest(%s::uuid[], %s::timestamptz[]) AS t(id, c) WHERE e.id = t.id",
            (event_ids, created),
        )

        t0 = time.perf_counter()
        for k, (event_id, created_at) in enumerate(zip(event_ids, created), start=1):
            conn.execute(
                """
                INSERT INTO notifications_notification
                    (event_id, recipient_id, title, body, url, visible, created_at, read_at,
                     archived_at)
                SELECT %(event)s, r.id, %(title)s, %(body)s, %(url)s, true, %(created)s,
                       CASE WHEN random() < 0.3 THEN NULL
                            ELSE %(created)s + interval '45 minutes' END,
                       NULL
                FROM bench_inbox_recipients r ORDER BY r.id
                """,
                {
                    "event": event_id,
                    "title": f"Weekly digest #{k}",
                    "body": "Dana and 3 others commented on your post.",
                    "url": f"https://example.com/p/{k}",
                    "created": created_at,
                },
            )
            if k % max(1, per // 10) == 0 or k == per:
                rows = k * recipients
                say(
                    f"  {rows:,}/{recipients * per:,} notifications"
                    f" ({rows / (time.perf_counter() - t0):,.0f}/s)"
                )
        conn.execute("RESET session_replication_role")
        if not fk_checks:
            # The replica role skipped the unread-counter triggers too: recount
            # the data set's recipients (one pass over their unread index).
            conn.execute(
                """
                INSERT INTO notifications_unreadcount AS c (recipient_id, count)
                SELECT r.id, (SELECT count(*) FROM notifications_notification n
                              WHERE n.recipient_id = r.id
                              AND n.visible AND n.read_at IS NULL AND n.archived_at IS NULL)
                FROM bench_inbox_recipients r ORDER BY r.id
                ON CONFLICT (recipient_id) DO UPDATE SET count = EXCLUDED.count
                """
            )
    say("VACUUM ANALYZE of the notification, event and recipient tables")
    with Timer() as vacuum_timer:
        data.vacuum(
            env, "notifications_notification", "notifications_event", "notifications_recipient"
        )
    total_timer.__exit__(None, None, None)
    meta = {
        "tag": tag,
        "recipients": recipients,
        "per_recipient": per,
        "rows": recipients * per,
        "event_ids": event_ids,
        "prefix": prefix,
        "fk_checks_during_build": fk_checks,
        "build_seconds": round(total_timer.elapsed, 1),
        "vacuum_seconds": round(vacuum_timer.elapsed, 1),
    }
    meta_put(env, meta_key, meta)
    say(f"data set built in {total_timer.elapsed:.0f}s (vacuum {vacuum_timer.elapsed:.0f}s)")
    return meta


def _recipients(env: BenchEnv, prefix: str) -> list[tuple[int, str]]:
    with env.connect() as conn:
        return conn.execute(
            "SELECT id, external_id FROM notifications_recipient WHERE external_id LIKE %s"
            " ORDER BY id",
            (prefix + "%",),
        ).fetchall()


def _explain(func, **kwargs) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement `func(**kwargs)` executes, as executed."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        func(**kwargs)
    plans = []
    for query in ctx.captured_queries:
        sql = query["sql"]
        if not sql or not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plans.append(
                {"sql": " ".join(sql.split()), "plan": [row[0] for row in cursor.fetchall()]}
            )
    return plans


def _time_calls(func, ids: list[int], calls: int, rng: random.Random, **kwargs) -> list[float]:
    samples = []
    for _ in range(calls):
        rid = rng.choice(ids)
        t0 = time.perf_counter()
        func(recipient_id=rid, **kwargs)
        samples.append(time.perf_counter() - t0)
    return samples


def run(env: BenchEnv, opts) -> dict:
    quick = opts.quick
    recipients, per = _sizes(quick)
    calls = 500 if quick else 2000
    warm_calls = 100 if quick else 300
    django_setup()
    from notifications.services.inbox import inbox_page, unread_count

    meta = ensure_dataset(env, recipients, per)
    people = _recipients(env, meta["prefix"])
    ids = [rid for rid, _ in people]
    if len(ids) != recipients:
        raise RuntimeError(f"expected {recipients:,} data-set recipients, found {len(ids):,}")
    with env.connect() as conn:
        table_rows = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'notifications_notification'"
        ).fetchone()[0]
        sizes = dict(
            conn.execute(
                "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid)) FROM pg_class c"
                " WHERE c.relname LIKE 'notification%%' AND c.relkind IN ('r', 'i')"
                " AND (c.relname LIKE 'notifications_notification%%'"
                " OR c.relname LIKE 'notification\\_%%')"
            ).fetchall()
        )
    vacuum_if_dirty(env, "notifications_notification")
    vacuum_if_dirty(env, "notifications_event", min_dead=1000)
    checkpoint(env)
    activity = db_activity(env)

    rng = random.Random(11)
    items, _ = inbox_page(recipient_id=ids[0], status=None, cursor=None, limit=20)
    if len(items) != 20:
        warn(f"inbox_page returned {len(items)} items for a recipient with {per} notifications")
    say(f"in-process warm-up: {warm_calls} calls each")
    _time_calls(inbox_page, ids, warm_calls, rng, status=None, cursor=None, limit=20)
    _time_calls(unread_count, ids, warm_calls, rng)
    say(f"in-process: {calls:,} inbox_page calls on random recipients")
    page_lat = latency_summary_ms(
        _time_calls(inbox_page, ids, calls, rng, status=None, cursor=None, limit=20)
    )
    say(
        f"  inbox_page p50 {page_lat['p50']:.2f} ms, p95 {page_lat['p95']:.2f} ms,"
        f" p99 {page_lat['p99']:.2f} ms"
    )
    say(f"in-process: {calls:,} unread_count calls on random recipients")
    count_lat = latency_summary_ms(_time_calls(unread_count, ids, calls, rng))
    say(
        f"  unread_count p50 {count_lat['p50']:.2f} ms, p95 {count_lat['p95']:.2f} ms,"
        f" p99 {count_lat['p99']:.2f} ms"
    )
    autovacuum_after = autovacuum_running(env)
    if autovacuum_after:
        warn(f"autovacuum ran during the in-process measurement: {autovacuum_after}")
    sample = rng.choice(ids)
    plans = {
        "recipient_id": sample,
        "inbox_page": _explain(inbox_page, recipient_id=sample, status=None, cursor=None, limit=20),
        "unread_count": _explain(unread_count, recipient_id=sample),
    }
    for name in ("inbox_page", "unread_count"):
        for entry in plans[name]:
            timing = [line.strip() for line in entry["plan"] if "Execution Time" in line]
            say(
                f"  EXPLAIN {name}: {entry['plan'][0].strip()[:90]}"
                f" ... {timing[0] if timing else ''}"
            )

    http = _http(env, people, rng, quick, opts)

    metrics = [
        metric("inbox_page p50 (in-process)", page_lat["p50"], "ms"),
        metric("inbox_page p95 (in-process)", page_lat["p95"], "ms", below=GOAL_P95_MS),
        metric("inbox_page p99 (in-process)", page_lat["p99"], "ms"),
        metric("unread_count p50 (in-process)", count_lat["p50"], "ms"),
        metric("unread_count p95 (in-process)", count_lat["p95"], "ms", below=GOAL_P95_MS),
        metric("unread_count p99 (in-process)", count_lat["p99"], "ms"),
    ]
    for name, label in (("inbox", "GET /inbox"), ("unread", "GET /inbox/unread-count")):
        for conc in (1, 8):
            res = http.get(f"{name}_c{conc}")
            if not res:
                continue
            lat = res["latency_ms"]
            if conc == 8:
                metrics.append(metric(f"{label} c=8 throughput", res["ok_rps"], "req/s"))
            metrics.append(
                metric(f"{label} c={conc} p50 / p99", f"{lat['p50']:.1f} / {lat['p99']:.1f}", "ms")
            )
            if res["error_count"]:
                metrics.append(
                    metric(f"{label} c={conc} errors", res["error_count"], "", at_most=0)
                )
    return {
        "metrics": metrics,
        "details": {
            "data_set": {k: v for k, v in meta.items() if k != "event_ids"},
            "table_rows_estimate": table_rows,
            "relation_sizes": sizes,
            "calls": calls,
            "in_process_ms": {"inbox_page": page_lat, "unread_count": count_lat},
            "explain": plans,
            "http": http,
            "db_activity_start": activity,
            "autovacuum_at_end_of_in_process_measurement": autovacuum_after,
            "loadavg": loadavg(),
        },
    }


def _http(
    env: BenchEnv, people: list[tuple[int, str]], rng: random.Random, quick: bool, opts
) -> dict:
    generator = pick_generator(opts.generator)
    web, base = start_web(env, command=opts.web_command)
    try:
        key = env.manage("create_api_key", "bench").strip().splitlines()[-1].strip()
        chosen = rng.sample(people, 200)
        say(f"issuing recipient tokens for {len(chosen)} random recipients")
        tokens = []
        for _, external_id in chosen:
            _, body = http_json(
                "POST", f"{base}/api/v1/recipients/{external_id}/token", token=f"Bearer {key}"
            )
            tokens.append(f"Recipient {body['token']}")
        _, page = http_json("GET", f"{base}/api/v1/inbox", token=tokens[0])
        if len(page.get("results", [])) != 20:
            warn(f"GET /api/v1/inbox returned {len(page.get('results', []))} items")
        variants = [(token, "") for token in tokens]
        results: dict[str, dict] = {"generator": generator, "web_command": web.argv}
        long, short = (3, 2) if quick else (8, 4)
        for name, path in (("inbox", "/api/v1/inbox"), ("unread", "/api/v1/inbox/unread-count")):
            run_load(
                base_url=base,
                method="GET",
                path=path,
                variants=variants,
                concurrency=8,
                duration=1 if quick else 2,
                expected_status=200,
                generator=generator,
                label="warm-up",
            )
            for conc, seconds in ((1, short), (8, long)):
                res = run_load(
                    base_url=base,
                    method="GET",
                    path=path,
                    variants=variants,
                    concurrency=conc,
                    duration=seconds,
                    expected_status=200,
                    generator=generator,
                    label=f"{name} c={conc}",
                )
                results[f"{name}_c{conc}"] = res.as_dict()
        return results
    finally:
        REGISTRY.stop(web)
