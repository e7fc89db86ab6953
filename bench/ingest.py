"""Scenario `ingest`: producer API throughput on the real stack.

Web server as the Procfile's web line, both Celery workers as its worker
lines (so each accepted event's Redis publish and its fan-out really happen),
load from wrk (or aiohttp). Phases, each after a purge of the Celery queues:

* GET /healthz            - baseline of a trivial endpoint, same generator/concurrency
* POST /api/v1/events     - one event per request, concurrency 32
* POST /api/v1/events/batch - 1,000 events per request, concurrency 4
"""

from __future__ import annotations

import json
import random
import time

import psutil

from bench import data, profiling
from bench.common import loadavg, metric, say
from bench.env import BenchEnv, checkpoint, db_activity
from bench.load import pick_generator, run_load
from bench.procs import REGISTRY, CpuMeter, http_json, listener_pid, start_web, start_worker

TYPE_KEY = "bench.ping"
RECIPIENT_POOL = 20_000
SINGLE_CONCURRENCY = 32
BATCH_CONCURRENCY = 4
BATCH_SIZE = 1000
GOAL_SINGLE = 2_000
GOAL_BATCH = 20_000


def event_body(rng: random.Random, i: int) -> dict:
    a, b = rng.sample(range(1, RECIPIENT_POOL + 1), 2)
    post = rng.randrange(1, 100_000)
    return {
        "type": TYPE_KEY,
        "recipients": [f"ing-u{a}", f"ing-u{b}"],
        "actor": f"ing-u{rng.randrange(1, RECIPIENT_POOL + 1)}",
        "data": {
            "post_id": post,
            "post_title": f"Release notes for build {post}",
            "comment": "Looks good to me, shipping it after the review.",
            "url": f"https://example.com/posts/{post}#comment-{i}",
        },
    }


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _port(url: str) -> int | None:
    from urllib.parse import urlsplit

    return urlsplit(url).port


def _system_cpu() -> tuple[float, float]:
    t = psutil.cpu_times()
    busy = (
        t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
    )
    return busy, getattr(t, "steal", 0.0)


def _db_commit_baseline(env: BenchEnv, type_id: int, seconds: float, concurrency: int) -> dict:
    """Raw psycopg: one event-shaped row per transaction (INSERT + COMMIT) into a
    scratch table LIKE notifications_event INCLUDING ALL, from `concurrency`
    threads: what the database alone sustains for single-event accepts."""
    import threading
    import uuid

    import psycopg
    from psycopg.types.json import Jsonb

    columns = (
        "id, api_key_id, type_id, recipients, actor, data, priority, status, created_at,"
        " enqueued_at, fanout_page, fanout_source, fanout_cursor, recipient_count, relay_attempts"
    )
    sql = (
        f"INSERT INTO bench_event_scratch ({columns}) VALUES"
        " (%s, NULL, %s, %s, %s, %s, 'normal', 'accepted', now(), now(), 0, 0, 0, 0, 0)"
    )
    rng = random.Random(5)
    body = event_body(rng, 0)
    counts = [0] * concurrency
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def work(index: int) -> None:
        try:
            with psycopg.connect(env.database_url) as conn:
                while time.monotonic() < stop:
                    conn.execute(
                        sql,
                        (
                            uuid.uuid4(),
                            type_id,
                            Jsonb({"ids": body["recipients"], "topics": []}),
                            body["actor"],
                            Jsonb(body["data"]),
                        ),
                    )
                    conn.commit()
                    counts[index] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(concurrency)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - t0
    total = sum(counts)
    return {
        "concurrency": concurrency,
        "commits": total,
        "commits_per_s": round(total / elapsed, 1),
        "mean_ms": round(elapsed / max(total / concurrency, 1) * 1000, 3),
        "errors": errors[:3],
    }


def db_baseline(env: BenchEnv, type_id: int, seconds: float) -> dict:
    with env.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_event_scratch")
        conn.execute("CREATE TABLE bench_event_scratch (LIKE notifications_event INCLUDING ALL)")
    try:
        result = {}
        for concurrency in (2, 32):
            res = _db_commit_baseline(env, type_id, seconds, concurrency)
            say(
                f"db baseline: INSERT+COMMIT of one event row, {concurrency} connections:"
                f" {res['commits_per_s']:,.0f}/s ({res['mean_ms']:.2f} ms each)"
            )
            result[f"c{concurrency}"] = res
        return result
    finally:
        with env.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS bench_event_scratch")


def run(env: BenchEnv, opts) -> dict:
    quick = opts.quick
    warm = 1 if quick else 3
    t_health = 4 if quick else 10
    t_single = 5 if quick else 15
    t_batch = 5 if quick else 15
    generator = pick_generator(opts.generator)

    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()  # bench Redis db only: no stale fan-out tasks for the new workers
    checkpoint(env)

    urgent = start_worker(env, "worker_urgent")
    bulk = start_worker(env, "worker_bulk")
    web, base = start_web(env, command=opts.web_command)

    key = env.manage("create_api_key", "bench").strip().splitlines()[-1].strip()
    bearer = f"Bearer {key}"
    status, _ = http_json(
        "PUT",
        f"{base}/api/v1/notification-types/{TYPE_KEY}",
        token=bearer,
        body={
            "channels": ["in_app"],
            "category": "bench",
            "templates": {"in_app": {"en": {"title": TYPE_KEY}}},
        },
    )
    say(f"notification type {TYPE_KEY} ready (HTTP {status})")
    tid = data.type_id(env, TYPE_KEY)

    rng = random.Random(42)
    singles = [(bearer, _dumps(event_body(rng, i))) for i in range(2000)]
    batches = [
        (
            bearer,
            _dumps({"events": [event_body(rng, b * BATCH_SIZE + i) for i in range(BATCH_SIZE)]}),
        )
        for b in range(4)
    ]
    say(
        f"request bodies: single ~{len(singles[0][1])} bytes,"
        f" batch ~{len(batches[0][1]) // 1024} KiB"
    )

    pg_pid = listener_pid(_port(env.database_url) or 5432)
    redis_pid = listener_pid(_port(env.redis_url) or 6379)
    import os

    meter = CpuMeter(
        {
            "web": [web.pid],
            "workers": [urgent.pid, bulk.pid],
            "postgres": [pg_pid] if pg_pid else [],
            "redis": [redis_pid] if redis_pid else [],
            "bench": [os.getpid()],
        }
    )

    def count_done() -> int:
        with env.connect() as conn:
            return conn.execute(
                "SELECT count(*) FROM notifications_event WHERE type_id = %s AND status = 'done'",
                (tid,),
            ).fetchone()[0]

    phases: dict[str, dict] = {}
    db_base = db_baseline(env, tid, 2 if quick else 4)

    def sessions() -> int:
        with env.connect() as conn:
            return conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()[0]

    def phase(name: str, **load) -> object:
        data.purge_queues(env)
        time.sleep(0.5)
        done0 = count_done()
        sessions0 = sessions()
        cpu0, steal0 = _system_cpu()
        meter.start()
        result = run_load(base_url=base, generator=generator, label=name, **load)
        cpu = meter.stop()
        cpu1, steal1 = _system_cpu()
        wall = cpu["_wall_s"]
        cpu["system_busy"] = round((cpu1 - cpu0) / wall, 3)
        cpu["steal"] = round((steal1 - steal0) / wall, 3)
        cpu["other_incl_generator"] = round(
            cpu["system_busy"]
            - sum(
                v for k, v in cpu.items() if k in ("web", "workers", "postgres", "redis", "bench")
            ),
            3,
        )
        backlog = data.queue_backlog(env)
        fanned = count_done() - done0
        opened = sessions() - sessions0
        phases[name] = {
            "db_sessions_opened": opened,
            "load": result.as_dict(),
            "cpu_cores": cpu,
            "celery_backlog_after": backlog,
            "events_fanned_out_during_phase": fanned,
            "fanout_events_per_s_during_phase": round(fanned / result.duration_s, 1)
            if result.duration_s
            else None,
            "loadavg_after": loadavg(),
        }
        cpu_busy = ", ".join(f"{k}={v}" for k, v in cpu.items() if not k.startswith("_"))
        say(
            f"  cpu cores busy: {cpu_busy};"
            f" fan-out kept up with {fanned:,} events, backlog {backlog:,} tasks;"
            f" {opened:,} new DB sessions"
        )
        return result

    # Warm-up: loads URLconf, DRF, the type cache and DB connections in every web worker.
    run_load(
        base_url=base,
        generator=generator,
        label="warm-up",
        method="POST",
        path="/api/v1/events",
        variants=singles,
        concurrency=SINGLE_CONCURRENCY,
        duration=warm,
        expected_status=202,
    )
    health = phase(
        "healthz",
        method="GET",
        path="/healthz",
        variants=[("", "")],
        concurrency=SINGLE_CONCURRENCY,
        duration=t_health,
        expected_status=200,
    )
    single = phase(
        "events_single",
        method="POST",
        path="/api/v1/events",
        variants=singles,
        concurrency=SINGLE_CONCURRENCY,
        duration=t_single,
        expected_status=202,
    )
    run_load(
        base_url=base,
        generator=generator,
        label="batch warm-up",
        method="POST",
        path="/api/v1/events/batch",
        variants=batches,
        concurrency=BATCH_CONCURRENCY,
        duration=warm,
        expected_status=207,
        mode="batch",
    )
    batch = phase(
        "events_batch",
        method="POST",
        path="/api/v1/events/batch",
        variants=batches,
        concurrency=BATCH_CONCURRENCY,
        duration=t_batch,
        expected_status=207,
        mode="batch",
    )

    profile = None
    if opts.profile:
        profile = _profile_single(env, web, base, generator, singles, 5 if quick else 10)

    data.purge_queues(env)
    for managed in (web, bulk, urgent):
        REGISTRY.stop(managed)
    env.redis().flushdb()
    data.delete_events_of_type(env, TYPE_KEY)
    data.vacuum(env, "notifications_event")

    single_rate = single.items_per_s
    ratio = single.ok_rps / health.ok_rps if health.ok_rps else None
    metrics = [
        metric(
            "POST /events accepted events/s (c=32)",
            round(single_rate, 1),
            "ev/s",
            at_least=GOAL_SINGLE,
        ),
        metric("POST /events p50 latency", single.latency_ms.get("p50"), "ms"),
        metric("POST /events p99 latency", single.latency_ms.get("p99"), "ms"),
        metric("POST /events errors", single.error_count, "", at_most=0),
        metric("GET /healthz baseline (c=32)", round(health.ok_rps, 1), "req/s"),
        metric("ratio POST /events / healthz", round(ratio, 3) if ratio else None, "x"),
        metric("DB alone: 1-event INSERT+COMMIT, 2 conns", db_base["c2"]["commits_per_s"], "tx/s"),
        metric(
            "DB alone: 1-event INSERT+COMMIT, 32 conns", db_base["c32"]["commits_per_s"], "tx/s"
        ),
        metric(
            f"POST /events/batch events/s (1,000/req, c={BATCH_CONCURRENCY})",
            round(batch.items_per_s, 1),
            "ev/s",
            at_least=GOAL_BATCH,
        ),
        metric("POST /events/batch p50 request latency", batch.latency_ms.get("p50"), "ms"),
        metric("POST /events/batch p99 request latency", batch.latency_ms.get("p99"), "ms"),
        metric("POST /events/batch errors", batch.error_count, "", at_most=0),
    ]
    return {
        "metrics": metrics,
        "details": {
            "generator": generator,
            "web_command": web.argv,
            "web_command_is_procfile": not opts.web_command,
            "worker_commands": {"worker_urgent": urgent.argv, "worker_bulk": bulk.argv},
            "phases": phases,
            "db_commit_baseline": db_base,
            "event_body_example": json.loads(singles[0][1]),
            "batch_size": BATCH_SIZE,
            "durations_s": {
                "warm_up": warm,
                "healthz": t_health,
                "single": t_single,
                "batch": t_batch,
            },
            "db_activity_end": db_activity(env),
            "profile": profile,
        },
    }


def _profile_single(env: BenchEnv, web, base: str, generator: str, singles, seconds: int) -> dict:
    """py-spy one web worker process during an extra single-POST phase (not the measured one)."""
    children = web.workers()
    if not children:
        return {"error": "no web worker process found"}
    target = children[0].pid
    out = env.log_dir / f"py-spy-web-{target}.txt"
    say(f"profiling web worker pid {target} with py-spy for {seconds}s (extra phase, not measured)")
    recorder = profiling.start_record(target, seconds, out)
    if recorder is None:
        return {"error": "py-spy not available"}
    time.sleep(0.5)
    run_load(
        base_url=base,
        generator=generator,
        label="profiled",
        method="POST",
        path="/api/v1/events",
        variants=singles,
        concurrency=SINGLE_CONCURRENCY,
        duration=seconds,
        expected_status=202,
    )
    profiling.finish_record(recorder, timeout=30)
    summary = profiling.summarize(out)
    summary["raw_file"] = str(out)
    if "self_pct" in summary:
        say("top self-time frames in the web worker:")
        for name, pct in summary["self_pct"][:12]:
            say(f"  {pct:5.1f}%  {name}")
    return summary
