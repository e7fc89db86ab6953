"""Prometheus gauges read at scrape time, so they are true across all
processes (web, workers, beat) without multiprocess bookkeeping."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import connection
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from notifications.selectors import fanout_backlog_ages

log = logging.getLogger(__name__)
_registered = False


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
        try:
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
            )
            try:
                pipe = client.pipeline()
                for queue in settings.PRIORITIES:
                    pipe.llen(queue)
                for queue, depth in zip(settings.PRIORITIES, pipe.execute()):
                    queues.add_metric([queue], depth)
            finally:
                client.close()
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
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FILTER (WHERE next_attempt_at <= now()),"
                    " count(*) FILTER (WHERE next_attempt_at > now())"
                    " FROM notifications_delivery WHERE status = 'queued'"
                )
                due, held = cursor.fetchone()
            deliveries.add_metric(["due"], due)
            deliveries.add_metric(["held"], held)
        except Exception:  # noqa: BLE001
            log.warning("waiting deliveries unavailable", exc_info=True)
        yield queues
        yield events
        yield backlog
        yield deliveries


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(PipelineCollector())
        _registered = True
