"""Prometheus gauges read at scrape time, so they are true across all
processes (web, workers, beat) without multiprocess bookkeeping.

The work happens in Celery workers, whose own counters the web process
serving /metrics never sees; so everything here is read from PostgreSQL and
Redis when scraped, each with a few index probes or a pass over a bounded set
of rows (tests/test_metrics_cockpit.py counts the queries of a scrape):

- PipelineCollector: queue depths, unacknowledged messages, events waiting,
  the fan-out backlog, queued deliveries.
- OutboxCounters: events, notifications and deliveries written, as counters,
  from PostgreSQL's own per-table insert statistics.
- SweepCollector: each sweep's last run, lag and duration (SweepRun rows).
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from notifications.schedules import schedules
from notifications.selectors import fanout_backlog_ages

log = logging.getLogger(__name__)
_registered = False

# kombu's Redis transport keeps every message handed to a consumer and not yet
# acknowledged in this hash (kombu.transport.redis, `unacked_key`).
UNACKED_KEY = "unacked"
# Sweep runs this recent are summarised (runs and longest duration by sweep).
SWEEP_RECENT_SECONDS = 900
# Sweep names come from code; the bound only guards the label set.
SWEEP_NAMES_MAX = 50


def broker_queue_depths() -> tuple[dict[str, int], int]:
    """Messages waiting in each priority queue, and those handed to a worker
    and not yet acknowledged: one Redis round trip (also `celery clarion queues`)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        pipe = client.pipeline()
        for queue in settings.PRIORITIES:
            pipe.llen(queue)
        pipe.hlen(UNACKED_KEY)
        *depths, unacked = pipe.execute()
    finally:
        client.close()
    return dict(zip(settings.PRIORITIES, depths)), unacked


class PipelineCollector:
    def describe(self):
        # Declared so registering does not call collect() (and query) at import.
        return []

    def collect(self):
        queues = GaugeMetricFamily(
            "clarion_queue_depth", "Messages waiting in a Celery queue", labels=["queue"]
        )
        events = GaugeMetricFamily(
            "clarion_events_pending", "Events not yet fanned out, by status", labels=["status"]
        )
        unacked = GaugeMetricFamily(
            "clarion_broker_unacked_messages",
            "Messages handed to a worker and not yet acknowledged (running, prefetched, or"
            " left by a worker that died: redelivered after the visibility timeout)",
        )
        try:
            depths, unacked_count = broker_queue_depths()
            for queue, depth in depths.items():
                queues.add_metric([queue], depth)
            unacked.add_metric([], unacked_count)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("queue depth unavailable", exc_info=True)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT status, count(*) FROM notifications_event"
                    " WHERE status IN ('accepted', 'processing') GROUP BY status"
                    " UNION ALL SELECT 'scheduled', count(*) FROM notifications_event"
                    " WHERE status = 'scheduled'"
                )
                counts = dict(cursor.fetchall())
            for status in ("accepted", "processing", "scheduled"):
                events.add_metric([status], counts.get(status, 0))
        except Exception:  # noqa: BLE001
            log.warning("pending events unavailable", exc_info=True)
        backlog = GaugeMetricFamily(
            "clarion_fanout_backlog_seconds",
            "Age of the oldest event of a priority waiting for its next fan-out page"
            " (0: none waiting)",
            labels=["priority"],
        )
        try:
            ages = fanout_backlog_ages()  # what the intake's backpressure compares with its bounds
            for priority in settings.PRIORITIES:
                backlog.add_metric([priority], ages.get(priority, 0.0))
        except Exception:  # noqa: BLE001
            log.warning("fan-out backlog unavailable", exc_info=True)
        deliveries = GaugeMetricFamily(
            "clarion_deliveries_waiting",
            "Queued deliveries: due (the dispatch sweep sends them next) or held (quiet hours)",
            labels=["state"],
        )
        by_channel = GaugeMetricFamily(
            "clarion_deliveries_queued",
            "Queued deliveries by channel: due (sent next) or held (quiet hours, backoff,"
            " an open breaker)",
            labels=["channel", "state"],
        )
        try:
            with connection.cursor() as cursor:
                # The same rows as before the channel split (one pass over the
                # queued rows), grouped: the totals are their sums.
                cursor.execute(
                    "SELECT channel, count(*) FILTER (WHERE next_attempt_at <= now()),"
                    " count(*) FILTER (WHERE next_attempt_at > now())"
                    " FROM notifications_delivery WHERE status = 'queued' GROUP BY channel"
                )
                rows = cursor.fetchall()
            deliveries.add_metric(["due"], sum(due for _, due, _ in rows))
            deliveries.add_metric(["held"], sum(held for _, _, held in rows))
            for channel, due, held in rows:
                by_channel.add_metric([channel, "due"], due)
                by_channel.add_metric([channel, "held"], held)
        except Exception:  # noqa: BLE001
            log.warning("waiting deliveries unavailable", exc_info=True)
        yield queues
        yield unacked
        yield events
        yield backlog
        yield deliveries
        yield by_channel


# Counter name -> the table whose inserted rows it counts.
OUTBOX_TABLES = {
    "clarion_events_accepted": (
        "notifications_event",
        "Events written to the outbox (accepted by the intake or produced by a sweep)",
    ),
    "clarion_notifications_created": (
        "notifications_notification",
        "Notifications written by fan-out and digests (one per recipient and event)",
    ),
    "clarion_deliveries_created": (
        "notifications_delivery",
        "Delivery rows written by fan-out (one per notification and external channel)",
    ),
}


class OutboxCounters:
    """Rows written, as Prometheus counters, from PostgreSQL's cumulative
    per-table statistics (pg_stat_get_tuples_inserted): exact across every
    process that writes, and one function call per table instead of a count
    over tables of millions of rows. The statistics count an insert a
    transaction then rolled back too (rare here: the intake's group commit
    and fan-out pages commit what they insert; ON CONFLICT DO NOTHING inserts
    nothing), reach the view up to ~1 s after the writer goes idle, and start
    again from 0 after a crash or pg_stat_reset(): a counter reset, which
    rate() and increase() expect."""

    def describe(self):
        return []

    def collect(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT t.name, pg_stat_get_tuples_inserted(to_regclass(t.tbl))"
                    " FROM unnest(%s::text[], %s::text[]) AS t(name, tbl)",
                    [list(OUTBOX_TABLES), [table for table, _ in OUTBOX_TABLES.values()]],
                )
                inserted = dict(cursor.fetchall())
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            log.warning("outbox counters unavailable", exc_info=True)
            return
        for name, (_, documentation) in OUTBOX_TABLES.items():
            if inserted.get(name) is not None:
                yield CounterMetricFamily(name, documentation, value=inserted[name])


class SweepCollector:
    """Each sweep's last recorded run and the runs of the last 15 minutes.

    The names are read with a skip scan of sweeprun_name_started_idx (one
    probe per distinct name), the last run of each with one more probe, and
    the recent runs from sweeprun_started_idx: a few hundred rows at most.
    An idle sweep records a run at most once a minute per process
    (notifications/services/sweep_runs.py), so a healthy sweep's lag stays
    under ~60 s plus its interval."""

    def describe(self):
        return []

    def collect(self):
        families = {
            "last": GaugeMetricFamily(
                "clarion_sweep_last_run_timestamp_seconds",
                "Start of the last recorded run of a sweep (Unix time)",
                labels=["sweep"],
            ),
            "lag": GaugeMetricFamily(
                "clarion_sweep_lag_seconds",
                "Seconds since the last recorded run of a sweep started",
                labels=["sweep"],
            ),
            "duration": GaugeMetricFamily(
                "clarion_sweep_last_duration_seconds",
                "Duration of the last recorded run of a sweep",
                labels=["sweep"],
            ),
            "max": GaugeMetricFamily(
                "clarion_sweep_recent_max_duration_seconds",
                "Longest recorded run of a sweep in the last 15 minutes",
                labels=["sweep"],
            ),
            "runs": GaugeMetricFamily(
                "clarion_sweep_recent_runs",
                "Recorded runs of a sweep in the last 15 minutes, by status (ok, skipped,"
                " failed; idle runs are recorded at most once a minute per process)",
                labels=["sweep", "status"],
            ),
        }
        interval = GaugeMetricFamily(
            "clarion_sweep_interval_seconds",
            "How often Beat schedules a sweep (notifications/schedules.py)",
            labels=["sweep"],
        )
        for schedule in schedules():
            interval.add_metric([schedule.name], float(schedule.every_seconds))
        try:
            self._read(families)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            log.warning("sweep runs unavailable", exc_info=True)
        yield from families.values()
        yield interval

    def _read(self, families: dict[str, GaugeMetricFamily]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH RECURSIVE names(name, n) AS (
                    (SELECT name, 1 FROM notifications_sweeprun ORDER BY name LIMIT 1)
                    UNION ALL
                    SELECT (SELECT r.name FROM notifications_sweeprun r
                            WHERE r.name > names.name ORDER BY r.name LIMIT 1), n + 1
                    FROM names WHERE names.name IS NOT NULL AND n < %s
                )
                SELECT names.name, extract(epoch FROM last.started_at),
                       extract(epoch FROM now() - last.started_at), last.duration_ms
                FROM names CROSS JOIN LATERAL (
                    SELECT started_at, duration_ms FROM notifications_sweeprun r
                    WHERE r.name = names.name ORDER BY r.started_at DESC LIMIT 1
                ) last
                WHERE names.name IS NOT NULL
                """,
                [SWEEP_NAMES_MAX],
            )
            for name, started, lag, duration_ms in cursor.fetchall():
                families["last"].add_metric([name], float(started))
                families["lag"].add_metric([name], max(0.0, float(lag)))
                families["duration"].add_metric([name], duration_ms / 1000)
            cursor.execute(
                "SELECT name, status, count(*), max(duration_ms) FROM notifications_sweeprun"
                " WHERE started_at > now() - make_interval(secs => %s)"
                " GROUP BY name, status ORDER BY name, status LIMIT %s",
                [SWEEP_RECENT_SECONDS, SWEEP_NAMES_MAX * 3],
            )
            longest: dict[str, int] = {}
            for name, status, runs, duration_ms in cursor.fetchall():
                families["runs"].add_metric([name, status], runs)
                longest[name] = max(longest.get(name, 0), duration_ms)
            for name, duration_ms in longest.items():
                families["max"].add_metric([name], duration_ms / 1000)


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(PipelineCollector())
        REGISTRY.register(OutboxCounters())
        REGISTRY.register(SweepCollector())
        _registered = True
