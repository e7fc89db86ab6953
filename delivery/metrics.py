"""Delivery metrics: outcomes by channel and status, provider call times
(both counted in the process that sends), and, read at scrape time so they
are true across all workers, each provider's breaker state (Redis) and the
failed and dead deliveries by channel (PostgreSQL). Labels are bounded: channels, statuses and the
configured providers' names, never a recipient or delivery id."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

log = logging.getLogger(__name__)

DELIVERY_OUTCOMES = Counter(
    "clarion_deliveries_settled",
    "Deliveries recorded after a send, by channel and the status they reached",
    ["channel", "status"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "clarion_provider_call_seconds",
    "Time of one provider call (a batch of messages)",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class BreakerCollector:
    def describe(self):
        return []

    def collect(self):
        from delivery.providers.registry import provider_labels
        from delivery.services.breaker import STATE_VALUES, breaker_states

        gauge = GaugeMetricFamily(
            "clarion_provider_breaker_state",
            "Circuit breaker of a provider: 0 closed, 1 half-open, 2 open",
            labels=["channel", "provider"],
        )
        try:
            labels = provider_labels()
            states = breaker_states([name for _, name in labels])
            for channel, name in labels:
                gauge.add_metric([channel, name], STATE_VALUES[states[name]])
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("breaker states unavailable", exc_info=True)
        yield gauge
        yield self._undelivered()

    def _undelivered(self) -> GaugeMetricFamily:
        from django.db import connection

        gauge = GaugeMetricFamily(
            "clarion_deliveries_undelivered",
            "Deliveries failed or dead (the dead-letter queue), by channel",
            labels=["channel", "status"],
        )
        try:
            with connection.cursor() as cursor:
                # Served by delivery_undelivered_idx (a partial index on these rows only).
                cursor.execute(
                    "SELECT channel, status, count(*) FROM notifications_delivery"
                    " WHERE status IN ('failed', 'dead') GROUP BY channel, status"
                )
                for channel, status, count in cursor.fetchall():
                    gauge.add_metric([channel, status], count)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            log.warning("undelivered counts unavailable", exc_info=True)
        return gauge


_registered = False


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(BreakerCollector())
        _registered = True
