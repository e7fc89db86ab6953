"""Scenarios `fanout` and `fanout_million`: one event to a big topic, in-app only.

* through a real Celery worker subprocess (the Procfile's worker_bulk line):
  recipients/s = N / (first page start -> status 'done'); start and end come
  from the worker's log (task received, last page committed), the event row is
  polled for progress;
* in-process (fanout only): `event_fan_out_page` called in a loop, no Celery,
  to show the pure database rate;
* baseline (fanout only): a raw COPY of N same-shaped rows into a scratch table
  `LIKE notifications_notification INCLUDING ALL` (same indexes, no FKs), and
  the same rows by one INSERT ... SELECT from the subscriptions;
* fanout_million: 1,000,000 subscribers through the worker while the RSS of the
  worker's process tree is sampled every 0.5 s.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from unittest import mock

from bench import data
from bench.common import Timer, latency_summary_ms, loadavg, metric, say
from bench.env import BenchEnv, checkpoint, db_activity, django_setup, vacuum_if_dirty
from bench.procs import REGISTRY, RssSampler, start_worker

TYPE_KEY = "bench.fanout"
RECIPIENT_PREFIX = "bench-fan-"
GOAL_RATIO = 0.40
BUILD_CHUNK = 100_000
MIB = 1024 * 1024


def topic_key(n: int) -> str:
    return f"bench.fanout.{n}"


# --------------------------------------------------------------------------- #
# data set
# --------------------------------------------------------------------------- #


def ensure_topic(env: BenchEnv, n: int) -> int:
    """A topic with exactly n subscribers (recipients bench-fan-1..n), built set-based once."""
    key = topic_key(n)
    with env.connect() as conn:
        conn.execute(
            "INSERT INTO notifications_topic (key, created_at) VALUES (%s, now())"
            " ON CONFLICT (key) DO NOTHING",
            (key,),
        )
        topic_id = conn.execute(
            "SELECT id FROM notifications_topic WHERE key = %s", (key,)
        ).fetchone()[0]
        have = conn.execute(
            "SELECT count(*) FROM notifications_subscription WHERE topic_id = %s", (topic_id,)
        ).fetchone()[0]
        if have == n:
            say(f"topic {key} already has {n:,} subscribers; reusing them")
            return topic_id
        if have > n:
            conn.execute("DELETE FROM notifications_subscription WHERE topic_id = %s", (topic_id,))
        say(
            f"building topic {key}: {n:,} recipients and subscriptions"
            f" (set-based, {BUILD_CHUNK:,} per step)"
        )
        conn.execute("SET synchronous_commit = off")
        t0 = time.perf_counter()
        for start in range(1, n + 1, BUILD_CHUNK):
            end = min(n, start + BUILD_CHUNK - 1)
            conn.execute(
                """
                INSERT INTO notifications_recipient
                    (external_id, email, phone, locale, timezone, data, created_at, updated_at)
                SELECT %s || g, '', '', '', '', '{}', now(), now()
                FROM generate_series(%s::int, %s::int) g
                ON CONFLICT (external_id) DO NOTHING
                """,
                (RECIPIENT_PREFIX, start, end),
            )
            conn.execute(
                """
                INSERT INTO notifications_subscription (topic_id, recipient_id, created_at)
                SELECT %s, r.id, now()
                FROM generate_series(%s::int, %s::int) g
                JOIN notifications_recipient r ON r.external_id = %s || g
                ON CONFLICT (topic_id, recipient_id) DO NOTHING
                """,
                (topic_id, start, end, RECIPIENT_PREFIX),
            )
            elapsed = time.perf_counter() - t0
            say(f"  {end:,}/{n:,} subscribers ({end / elapsed:,.0f}/s)")
        conn.execute("ANALYZE notifications_recipient")
        conn.execute("ANALYZE notifications_subscription")
        have = conn.execute(
            "SELECT count(*) FROM notifications_subscription WHERE topic_id = %s", (topic_id,)
        ).fetchone()[0]
    if have != n:
        raise RuntimeError(f"topic {key} has {have:,} subscribers after the build, expected {n:,}")
    return topic_id


def _ensure_type() -> None:
    from notifications.services import types

    # A literal title equal to the key: what a type without templates showed.
    types.notification_type_put(
        key=TYPE_KEY,
        body={
            "channels": ["in_app"],
            "category": "bench",
            "templates": {"in_app": {"en": {"title": TYPE_KEY}}},
        },
    )


def _api_key_id() -> int:
    from notifications.api.auth import api_key_create
    from notifications.models import ApiKey

    key = ApiKey.objects.filter(name="bench-inprocess", revoked_at__isnull=True).first()
    return key.id if key else api_key_create(name="bench-inprocess")[0].id


def _event_body(n: int, label: str) -> dict:
    return {
        "type": TYPE_KEY,
        "recipients": [{"topic": topic_key(n)}],
        "actor": "bench",
        "data": {
            "release": "2.4.0",
            "title": "Version 2.4 is out",
            "url": "https://example.com/releases/2.4",
            "run": label,
        },
    }


# --------------------------------------------------------------------------- #
# worker log parsing
# --------------------------------------------------------------------------- #

_LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _ts(line: str) -> float | None:
    match = _LOG_TS.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _parse_worker_log(text: str, event_id: str, after: float) -> dict:
    first_received = None
    last_done = None
    pages = 0
    task_seconds: list[float] = []
    for line in text.splitlines():
        ts = _ts(line)
        if ts is None or ts < after - 1.0:
            continue
        if (
            "clarion.events.fan_out_page[" in line
            and line.endswith(" received")
            and first_received is None
        ):
            first_received = ts
        elif "fan-out page done" in line and f"event_id={event_id}" in line:
            pages += 1
            if "done=True" in line:
                last_done = ts
        elif "clarion.events.fan_out_page[" in line and " succeeded in " in line:
            try:
                task_seconds.append(float(line.split(" succeeded in ", 1)[1].split("s:", 1)[0]))
            except (IndexError, ValueError):
                pass
    return {
        "first_received": first_received,
        "last_done": last_done,
        "pages": pages,
        "task_seconds": task_seconds,
    }


# --------------------------------------------------------------------------- #
# runs
# --------------------------------------------------------------------------- #


def _through_worker(env: BenchEnv, n: int, *, sample_rss: bool, timeout: float) -> dict:
    from notifications.services import events

    env.redis().flushdb()  # bench Redis db only
    checkpoint(env)
    worker = start_worker(env, "worker_bulk")
    sampler = None
    try:
        if sample_rss:
            sampler = RssSampler(worker.pid, 0.5)
            sampler.start()
            time.sleep(2.0)
        rss_start = sampler.sample() if sampler else None
        key_id = _api_key_id()
        t_publish = time.time()
        accepted = events.event_accept(api_key_id=key_id, body=_event_body(n, "worker"))
        say(
            f"event {accepted.id} published;"
            f" waiting for fan-out of {n:,} recipients through the worker"
        )
        status, count, page = _wait_done(env, accepted.id, n, t_publish, timeout)
        t_poll_done = time.time()
        rss_end = sampler.sample() if sampler else None
        if sampler:
            time.sleep(1.0)
            sampler.stop()
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        REGISTRY.stop(worker)
    env.redis().flushdb()
    if status != "done":
        raise RuntimeError(
            f"fan-out ended with status {status!r} after {count:,} recipients;"
            f" see {worker.log_path}"
        )
    parsed = _parse_worker_log(worker.log_path.read_text(errors="replace"), accepted.id, t_publish)
    start = parsed["first_received"] or t_publish
    end = parsed["last_done"] or t_poll_done
    seconds = max(end - start, 1e-6)
    result = {
        "event_id": accepted.id,
        "recipients": count,
        "pages": page,
        "seconds_first_page_to_done": round(seconds, 3),
        "seconds_publish_to_done_polled": round(t_poll_done - t_publish, 3),
        "start_source": "worker log (task received)"
        if parsed["first_received"]
        else "publish time",
        "end_source": "worker log (last page committed)" if parsed["last_done"] else "poll",
        "recipients_per_s": round(count / seconds, 1),
        "page_task_seconds": latency_summary_ms(parsed["task_seconds"]),
        "worker_command": worker.argv,
        "worker_log": str(worker.log_path),
    }
    if sampler:
        samples = sampler.samples
        during = [rss for _, rss in samples]
        step = max(1, len(samples) // 400)
        result["rss"] = {
            "start_mib": round(rss_start / MIB, 1),
            "end_mib": round(rss_end / MIB, 1),
            "min_mib": round(min(during) / MIB, 1),
            "max_mib": round(max(during) / MIB, 1),
            "growth_mib": round((max(during) - rss_start) / MIB, 1),
            "samples": len(samples),
            "series_mib": [(t, round(r / MIB, 1)) for t, r in samples[::step]],
        }
    return result


def _wait_done(
    env: BenchEnv, event_id: str, n: int, t_publish: float, timeout: float
) -> tuple[str, int, int]:
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    with env.connect() as conn:
        while True:
            status, count, page = conn.execute(
                "SELECT status, recipient_count, fanout_page FROM notifications_event"
                " WHERE id = %s",
                (event_id,),
            ).fetchone()
            if status in ("done", "failed", "cancelled"):
                return status, count, page
            now = time.monotonic()
            if now - last_report >= 2.0:
                last_report = now
                elapsed = time.time() - t_publish
                say(
                    f"  fan-out {count:,}/{n:,} recipients, page {page},"
                    f" {count / elapsed:,.0f}/s so far"
                )
            if now > deadline:
                raise RuntimeError(
                    f"fan-out not done after {timeout:.0f}s ({count:,}/{n:,}, status {status})"
                )
            time.sleep(0.02)


def _in_process(n: int) -> dict:
    from django.conf import settings

    from notifications.services import events
    from notifications.services.fanout import event_fan_out_page

    key_id = _api_key_id()
    # The event is accepted exactly as the API does, minus the Celery publish.
    with mock.patch.object(events, "on_commit_fan_out", lambda items: None):
        accepted = events.event_accept(api_key_id=key_id, body=_event_body(n, "in-process"))
    say(f"in-process fan-out of {n:,} recipients (event_fan_out_page in a loop, no Celery)")
    page, inserted, page_times = 0, 0, []
    t0 = time.perf_counter()
    last = t0
    while True:
        tp = time.perf_counter()
        result = event_fan_out_page(event_id=accepted.id, page=page)
        page_times.append(time.perf_counter() - tp)
        if not result.ran:
            raise RuntimeError(f"page {page} did not run")
        inserted += result.inserted
        if result.done:
            break
        page = result.next_page
        if time.perf_counter() - last > 2.0:
            last = time.perf_counter()
            say(f"  {inserted:,}/{n:,} ({inserted / (last - t0):,.0f}/s)")
    elapsed = time.perf_counter() - t0
    return {
        "event_id": accepted.id,
        "recipients": inserted,
        "pages": len(page_times),
        "page_size": max(
            settings.CLARION["FANOUT_PAGE_SIZE"], settings.CLARION["MAX_EXPLICIT_RECIPIENTS"]
        ),
        "seconds": round(elapsed, 3),
        "recipients_per_s": round(inserted / elapsed, 1),
        "page_seconds": latency_summary_ms(page_times),
    }


def _copy_baseline(env: BenchEnv, topic_id: int, event_id: str) -> dict:
    """Rows/s of a raw COPY (and of one INSERT ... SELECT) into a same-indexed scratch table."""
    columns = "event_id, recipient_id, title, body, url, visible, created_at"
    with env.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_scratch")
        conn.execute(
            "CREATE TABLE bench_copy_scratch (LIKE notifications_notification INCLUDING ALL)"
        )
        try:
            indexes = [
                r[0]
                for r in conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'bench_copy_scratch'"
                ).fetchall()
            ]
            rids = [
                r[0]
                for r in conn.execute(
                    "SELECT recipient_id FROM notifications_subscription WHERE topic_id = %s"
                    " ORDER BY recipient_id",
                    (topic_id,),
                ).fetchall()
            ]
            now = conn.execute("SELECT now()::text").fetchone()[0]
            buffer = "".join(
                f"{event_id}\t{rid}\t{TYPE_KEY}\t\t\tt\t{now}\n" for rid in rids
            ).encode()
            say(
                f"baseline: COPY of {len(rids):,} same-shaped rows"
                f" ({len(buffer) / MIB:.1f} MiB) into a scratch table"
            )
            checkpoint(env)
            with Timer() as copy_timer:
                with conn.transaction():
                    with conn.cursor().copy(
                        f"COPY bench_copy_scratch ({columns}) FROM STDIN"
                    ) as copy:
                        for offset in range(0, len(buffer), 1 << 20):
                            copy.write(buffer[offset : offset + (1 << 20)])
            conn.execute("TRUNCATE bench_copy_scratch")
            checkpoint(env)
            with Timer() as insert_timer:
                conn.execute(
                    f"INSERT INTO bench_copy_scratch ({columns})"
                    " SELECT %s, recipient_id, %s, '', '', true, now()"
                    " FROM notifications_subscription"
                    " WHERE topic_id = %s ORDER BY recipient_id",
                    (event_id, TYPE_KEY, topic_id),
                )
        finally:
            conn.execute("DROP TABLE IF EXISTS bench_copy_scratch")
    n = len(rids)
    return {
        "rows": n,
        "copy_seconds": round(copy_timer.elapsed, 3),
        "copy_rows_per_s": round(n / copy_timer.elapsed, 1),
        "insert_select_seconds": round(insert_timer.elapsed, 3),
        "insert_select_rows_per_s": round(n / insert_timer.elapsed, 1),
        "scratch_indexes": indexes,
        "note": "scratch table has the same columns, defaults and indexes, but no foreign keys",
    }


def run(env: BenchEnv, opts) -> dict:
    n = 20_000 if opts.quick else 100_000
    django_setup()
    _ensure_type()
    topic_id = ensure_topic(env, n)
    data.delete_events_of_type(env, TYPE_KEY)
    activity = db_activity(env)

    worker = _through_worker(env, n, sample_rss=False, timeout=600)
    say(
        f"worker: {worker['recipients']:,} recipients"
        f" in {worker['seconds_first_page_to_done']:.2f}s"
        f" = {worker['recipients_per_s']:,.0f}/s ({worker['pages']} pages)"
    )
    checkpoint(env)
    inproc = _in_process(n)
    say(
        f"in-process: {inproc['recipients']:,} in {inproc['seconds']:.2f}s"
        f" = {inproc['recipients_per_s']:,.0f}/s"
    )
    copy = _copy_baseline(env, topic_id, worker["event_id"])
    say(
        f"COPY: {copy['copy_rows_per_s']:,.0f} rows/s;"
        f" INSERT...SELECT: {copy['insert_select_rows_per_s']:,.0f} rows/s"
    )
    data.delete_events_of_type(env, TYPE_KEY)
    vacuum_if_dirty(
        env, "notifications_notification"
    )  # leave no autovacuum work for the next scenario
    vacuum_if_dirty(env, "notifications_unreadcount")  # the deletes updated a counter per recipient

    ratio = worker["recipients_per_s"] / copy["copy_rows_per_s"]
    ratio_inproc = inproc["recipients_per_s"] / copy["copy_rows_per_s"]
    metrics = [
        metric(f"fan-out via worker, {n:,} subscribers", worker["recipients_per_s"], "rcpt/s"),
        metric("fan-out in-process (no Celery)", inproc["recipients_per_s"], "rcpt/s"),
        metric("COPY baseline (same indexes)", copy["copy_rows_per_s"], "rows/s"),
        metric("INSERT...SELECT baseline", copy["insert_select_rows_per_s"], "rows/s"),
        metric("ratio worker fan-out / COPY", round(ratio, 3), "x", at_least=GOAL_RATIO),
        metric("ratio in-process fan-out / COPY", round(ratio_inproc, 3), "x"),
    ]
    return {
        "metrics": metrics,
        "details": {
            "subscribers": n,
            "worker": worker,
            "in_process": inproc,
            "copy": copy,
            "db_activity_start": activity,
            "loadavg": loadavg(),
        },
    }


def run_million(env: BenchEnv, opts) -> dict:
    n = 1_000_000
    django_setup()
    _ensure_type()
    ensure_topic(env, n)
    data.delete_events_of_type(env, TYPE_KEY)
    activity = db_activity(env)
    worker = _through_worker(env, n, sample_rss=True, timeout=3600)
    rss = worker["rss"]
    say(
        f"worker: {worker['recipients']:,} recipients"
        f" in {worker['seconds_first_page_to_done']:.1f}s"
        f" = {worker['recipients_per_s']:,.0f}/s;"
        f" RSS start {rss['start_mib']} MiB, max {rss['max_mib']} MiB,"
        f" end {rss['end_mib']} MiB"
    )
    data.delete_events_of_type(env, TYPE_KEY)
    vacuum_if_dirty(env, "notifications_notification")
    vacuum_if_dirty(env, "notifications_unreadcount")
    flat_limit = 64.0
    metrics = [
        metric(
            "1M fan-out completed",
            worker["recipients"],
            "rcpt",
            at_least=n,
            goal_text="= 1,000,000",
        ),
        metric("1M fan-out via worker", worker["recipients_per_s"], "rcpt/s"),
        metric("1M fan-out duration", worker["seconds_first_page_to_done"], "s"),
        metric("worker tree RSS start", rss["start_mib"], "MiB"),
        metric("worker tree RSS min", rss["min_mib"], "MiB"),
        metric("worker tree RSS max", rss["max_mib"], "MiB"),
        metric("worker tree RSS end", rss["end_mib"], "MiB"),
        metric(
            "worker tree RSS growth (max - start)",
            rss["growth_mib"],
            "MiB",
            below=flat_limit,
            goal_text=f"< {flat_limit:.0f} (flat)",
        ),
    ]
    return {
        "metrics": metrics,
        "details": {
            "subscribers": n,
            "worker": worker,
            "db_activity_start": activity,
            "loadavg": loadavg(),
        },
    }
