"""Delivery metrics: outcomes by channel and status, provider call times
(both counted in the process that sends), and, read at scrape time so they
are true across all workers, each provider's breaker state (Redis) and the
failed and dead deliveries by channel (PostgreSQL). Labels are bounded: channels, statuses and the
configured providers' names, never a recipient or delivery id.

The sends happen in workers, so what /metrics shows of them is read from the
attempt log (notifications_deliveryattempt, one row per provider call) when
scraped: the attempts of the last minute by channel and outcome, and the
accept -> sent time of the newest sends among them. Both start from the first
attempt of the window, found by a binary search over the primary key (about
log2(rows) index probes), so a scrape reads only the window's rows, at most
WINDOW_MAX_ATTEMPTS of them, and joins at most LATENCY_SAMPLE of them."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from common.choices import EXTERNAL_CHANNELS

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# ~1,700 attempts a second before the window is cut short (measured peak: ~1,100/s).
WINDOW_MAX_ATTEMPTS = 100_000
LATENCY_SAMPLE = 5_000
# What a provider call's outcome can be (delivery.providers.base); anything
# else is counted as "other". A delivery an open breaker holds back
# ("deferred") makes no call, so it has no attempt row.
OUTCOMES = ("sent", "delivered", "retry", "failed")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# Cumulative counts (le: at most the bound), from the constants above.
_BUCKET_COUNTS = ", ".join(f"count(*) FILTER (WHERE s <= {float(b)!r})" for b in LATENCY_BUCKETS)

# The first attempt id of the window (NULL: none): a binary search on the
# primary key, one index probe a step. Attempts are written in time order
# (ids from a sequence, created_at = the settling transaction's start), so the
# rows from that id on are the window's.
_WINDOW_START_SQL = """
WITH RECURSIVE search(lo, hi) AS (
    SELECT min(id), max(id) + 1 FROM notifications_deliveryattempt
    UNION ALL
    SELECT CASE WHEN probe.created_at < %(since)s THEN probe.id + 1 ELSE search.lo END,
           CASE WHEN probe.created_at < %(since)s THEN search.hi
                ELSE (search.lo + search.hi) / 2 END
    FROM search CROSS JOIN LATERAL (
        SELECT id, created_at FROM notifications_deliveryattempt
        WHERE id >= (search.lo + search.hi) / 2 ORDER BY id LIMIT 1
    ) probe
    WHERE search.lo < search.hi
)
SELECT lo FROM search WHERE lo >= hi
"""

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


class AttemptWindowCollector:
    """The last minute of the attempt log: attempts by channel and outcome,
    and the accept -> sent time by channel (a gauge histogram: the buckets
    describe the window, they are not cumulative; read them with
    histogram_quantile() directly, without rate())."""

    def describe(self):
        return []

    def collect(self):
        attempts = GaugeMetricFamily(
            "clarion_delivery_attempts_last_minute",
            "Provider calls recorded in the last 60 s, by channel and outcome",
            labels=["channel", "outcome"],
        )
        latency = GaugeHistogramMetricFamily(
            "clarion_delivery_latency_seconds",
            "Event accepted (or its send_at) to provider accepted, of the newest sends"
            " of the last 60 s (at most 5,000), by channel",
            labels=["channel"],
        )
        try:
            self._read(attempts, latency)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            log.warning("attempt window unavailable", exc_info=True)
        yield attempts
        yield latency

    def _read(self, attempts: GaugeMetricFamily, latency: GaugeHistogramMetricFamily) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT now() - make_interval(secs => %s)", [WINDOW_SECONDS])
            (since,) = cursor.fetchone()
            cursor.execute(_WINDOW_START_SQL, {"since": since})
            row = cursor.fetchone()
            if row is None or row[0] is None:
                return
            start = row[0]
            cursor.execute(
                "SELECT split_part(provider, ':', 1), outcome, count(*) FROM ("
                "  SELECT provider, outcome FROM notifications_deliveryattempt"
                "  WHERE id >= %s ORDER BY id LIMIT %s) a GROUP BY 1, 2",
                [start, WINDOW_MAX_ATTEMPTS],
            )
            counts: dict[tuple[str, str], int] = {}
            for channel, outcome, count in cursor.fetchall():
                if channel not in EXTERNAL_CHANNELS:
                    continue  # a provider name outside the registry: never a label
                key = (channel, outcome if outcome in OUTCOMES else "other")
                counts[key] = counts.get(key, 0) + count
            for (channel, outcome), count in sorted(counts.items()):
                attempts.add_metric([channel, outcome], count)
            # Bucketed by PostgreSQL: one row per channel comes back.
            cursor.execute(
                """
                WITH sent AS (
                    SELECT delivery_id, created_at FROM notifications_deliveryattempt
                    WHERE id >= %s AND outcome IN ('sent', 'delivered')
                    ORDER BY id DESC LIMIT %s
                ), seconds AS (
                    SELECT d.channel, greatest(0, extract(epoch FROM sent.created_at
                        - greatest(e.created_at, coalesce(e.send_at, e.created_at)))) AS s
                    FROM sent
                    JOIN notifications_delivery d ON d.id = sent.delivery_id
                    JOIN notifications_notification n ON n.id = d.notification_id
                    JOIN notifications_event e ON e.id = n.event_id
                )
                SELECT channel, count(*), sum(s), """
                + _BUCKET_COUNTS
                + " FROM seconds GROUP BY channel ORDER BY channel",
                [start, LATENCY_SAMPLE],
            )
            rows = cursor.fetchall()
        for channel, count, total, *cumulative in rows:
            buckets = [(str(float(b)), n) for b, n in zip(LATENCY_BUCKETS, cumulative)]
            latency.add_metric([channel], [*buckets, ("+Inf", count)], float(total))


_registered = False


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(BreakerCollector())
        REGISTRY.register(AttemptWindowCollector())
        _registered = True
