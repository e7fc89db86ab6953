"""The operator's metrics on /metrics: outbox counters, queued deliveries by
channel, the last minute of provider calls and their latency, sweeps. All
read at scrape time from PostgreSQL and Redis, so the web process shows what
the workers did; a scrape costs a fixed number of queries."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from notifications.models import (
    Delivery,
    DeliveryAttempt,
    Event,
    Notification,
    Recipient,
    SweepRun,
)
from tests.helpers import wait_for
from tests.providers import PrimaryProvider
from tests.test_delivery_retries import PRIMARY, send_due
from tests.test_dispatch import NIGHT, send_event

NEW_FAMILIES = {
    "clarion_events_accepted": "counter",
    "clarion_notifications_created": "counter",
    "clarion_deliveries_created": "counter",
    "clarion_broker_unacked_messages": "gauge",
    "clarion_deliveries_queued": "gauge",
    "clarion_delivery_attempts_last_minute": "gauge",
    "clarion_delivery_latency_seconds": "gaugehistogram",
    "clarion_sweep_last_run_timestamp_seconds": "gauge",
    "clarion_sweep_lag_seconds": "gauge",
    "clarion_sweep_last_duration_seconds": "gauge",
    "clarion_sweep_recent_max_duration_seconds": "gauge",
    "clarion_sweep_recent_runs": "gauge",
    "clarion_sweep_interval_seconds": "gauge",
}


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def delivery_row(
    type_, external_id: str, channel: str, *, status="queued", age_seconds=0.0, due=True
) -> Delivery:
    """An event accepted `age_seconds` ago, its notification and one delivery."""
    recipient = Recipient.objects.create(external_id=external_id)
    event = Event.objects.create(type=type_, recipients={"ids": [external_id]}, priority="normal")
    Event.objects.filter(id=event.id).update(
        created_at=timezone.now() - timedelta(seconds=age_seconds)
    )
    notification = Notification.objects.create(event=event, recipient=recipient, title="t")
    return Delivery.objects.create(
        notification=notification,
        channel=channel,
        status=status,
        next_attempt_at=timezone.now() + timedelta(seconds=-1 if due else 3600),
    )


def attempt(delivery: Delivery, outcome: str, *, age_seconds: float = 0.0) -> None:
    row = DeliveryAttempt.objects.create(
        delivery=delivery, provider=f"{delivery.channel}:smtp:mail.example.com", outcome=outcome
    )
    if age_seconds:
        DeliveryAttempt.objects.filter(id=row.id).update(
            created_at=timezone.now() - timedelta(seconds=age_seconds)
        )


@pytest.mark.django_db
def test_a_scrape_declares_every_cockpit_family_with_its_type(client, comment_type):
    SweepRun.objects.create(name="event relay", started_at=timezone.now(), duration_ms=3)
    d = delivery_row(comment_type, "f1", "email", status="sent")
    attempt(d, "sent")
    delivery_row(comment_type, "f2", "sms")

    text = scrape(client)

    for name, kind in NEW_FAMILIES.items():
        shown = "histogram" if kind == "gaugehistogram" else kind
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"# TYPE {exposed if kind != 'counter' else name} {shown}" in text or (
            f"# TYPE {exposed} {shown}" in text
        ), name


OUTBOX_COUNTERS = (
    "clarion_events_accepted",
    "clarion_notifications_created",
    "clarion_deliveries_created",
)


def outbox_counts(client) -> dict:
    now = samples(scrape(client))
    return {name: now[(f"{name}_total", frozenset())] for name in OUTBOX_COUNTERS}


def steady_samples(client) -> dict:
    """Two scrapes a second apart whose outbox counters agree: other sessions'
    statistics (sent at most once a second) have all arrived."""
    previous = outbox_counts(client)

    def agreed() -> dict | None:
        nonlocal previous
        now = outbox_counts(client)
        steady = now if now == previous else None
        previous = now
        return steady

    return wait_for(agreed, timeout=15, interval=1.1, what="steady statistics")


@pytest.mark.django_db(transaction=True)
def test_outbox_counters_grow_by_the_rows_other_sessions_wrote(client, comment_type):
    with connection.cursor() as cursor:
        # Earlier tests' inserts (rolled back, still counted) must reach the view first.
        cursor.execute("SELECT pg_stat_force_next_flush()")
    before = steady_samples(client)
    delivery_row(comment_type, "c1", "email")
    delivery_row(comment_type, "c2", "email")
    with connection.cursor() as cursor:
        # Statistics reach the shared view when a session goes idle, at most once
        # a second; this asks for this session's to be sent now.
        cursor.execute("SELECT pg_stat_force_next_flush()")

    def grown():
        now = outbox_counts(client)
        return all(now[name] - before[name] == 2 for name in OUTBOX_COUNTERS)

    wait_for(grown, timeout=15, interval=0.2, what="the outbox counters to grow by 2")


@pytest.mark.django_db
def test_queued_deliveries_are_counted_by_channel_due_or_held(client, comment_type):
    delivery_row(comment_type, "q1", "email")
    delivery_row(comment_type, "q2", "email", due=False)
    delivery_row(comment_type, "q3", "sms", due=False)
    delivery_row(comment_type, "q4", "sms", status="sent")

    text = scrape(client)

    assert value(text, "clarion_deliveries_queued", channel="email", state="due") == 1
    assert value(text, "clarion_deliveries_queued", channel="email", state="held") == 1
    assert value(text, "clarion_deliveries_queued", channel="sms", state="held") == 1
    assert value(text, "clarion_deliveries_queued", channel="sms", state="due") == 0
    # The totals the README documents stay the sums.
    assert value(text, "clarion_deliveries_waiting", state="due") == 1
    assert value(text, "clarion_deliveries_waiting", state="held") == 2


@pytest.mark.django_db
def test_attempts_of_the_last_minute_are_counted_by_channel_and_outcome(client, comment_type):
    email = delivery_row(comment_type, "a1", "email")
    sms = delivery_row(comment_type, "a2", "sms")
    attempt(email, "sent", age_seconds=3600)  # outside the window
    attempt(email, "retry", age_seconds=90)  # outside the window
    attempt(email, "retry", age_seconds=30)
    attempt(email, "sent", age_seconds=5)
    attempt(sms, "failed")
    attempt(sms, "something new")

    text = scrape(client)

    name = "clarion_delivery_attempts_last_minute"
    assert value(text, name, channel="email", outcome="retry") == 1
    assert value(text, name, channel="email", outcome="sent") == 1
    assert value(text, name, channel="sms", outcome="failed") == 1
    assert value(text, name, channel="sms", outcome="other") == 1


@pytest.mark.django_db
def test_a_provider_name_outside_the_channels_never_becomes_a_label(client, comment_type):
    d = delivery_row(comment_type, "x1", "email")
    DeliveryAttempt.objects.create(delivery=d, provider="recipient-42:weird", outcome="sent")

    text = scrape(client)

    assert "recipient-42" not in text


@pytest.mark.django_db
def test_latency_buckets_hold_the_accept_to_sent_time_per_channel(client, comment_type):
    fast = delivery_row(comment_type, "l1", "email", status="sent", age_seconds=0.2)
    slow = delivery_row(comment_type, "l2", "email", status="sent", age_seconds=40)
    sms = delivery_row(comment_type, "l3", "sms", status="sent", age_seconds=3)
    retried = delivery_row(comment_type, "l4", "sms", status="queued", age_seconds=3)
    for d in (fast, slow, sms):
        attempt(d, "sent")
    attempt(retried, "retry")  # not a send: not in the latency

    text = scrape(client)

    name = "clarion_delivery_latency_seconds_bucket"
    assert value(text, name, channel="email", le="0.1") == 0
    assert value(text, name, channel="email", le="0.5") == 1
    assert value(text, name, channel="email", le="30.0") == 1
    assert value(text, name, channel="email", le="60.0") == 2
    assert value(text, name, channel="email", le="+Inf") == 2
    assert value(text, name, channel="sms", le="2.5") == 0
    assert value(text, name, channel="sms", le="5.0") == 1
    assert value(text, name, channel="sms", le="+Inf") == 1
    assert 40 < value(text, "clarion_delivery_latency_seconds_gsum", channel="email") < 42


@pytest.mark.django_db
def test_a_real_send_shows_in_the_attempts_and_the_latency(client, api_key, social_type, chain):
    chain(PRIMARY)
    PrimaryProvider.reset([200])
    send_event(api_key, "real1", NIGHT)

    send_due()
    text = scrape(client)

    assert value(text, "clarion_delivery_attempts_last_minute", channel="email", outcome="sent")
    assert value(text, "clarion_delivery_latency_seconds_bucket", channel="email", le="+Inf") == 1
    assert value(text, "clarion_delivery_latency_seconds_bucket", channel="email", le="5.0") == 1


@pytest.mark.django_db
def test_sweep_lag_and_durations_come_from_the_recorded_runs(client):
    now = timezone.now()
    SweepRun.objects.create(name="event relay", started_at=now - timedelta(hours=2), duration_ms=9)
    SweepRun.objects.create(
        name="event relay", started_at=now - timedelta(seconds=30), duration_ms=7
    )
    SweepRun.objects.create(
        name="event relay", started_at=now - timedelta(seconds=20), duration_ms=250, status="failed"
    )
    SweepRun.objects.create(name="reminders", started_at=now - timedelta(minutes=20), duration_ms=4)

    text = scrape(client)

    assert 19 < value(text, "clarion_sweep_lag_seconds", sweep="event relay") < 40
    assert value(text, "clarion_sweep_last_duration_seconds", sweep="event relay") == 0.25
    assert value(text, "clarion_sweep_recent_max_duration_seconds", sweep="event relay") == 0.25
    assert value(text, "clarion_sweep_recent_runs", sweep="event relay", status="ok") == 1
    assert value(text, "clarion_sweep_recent_runs", sweep="event relay", status="failed") == 1
    assert value(text, "clarion_sweep_lag_seconds", sweep="reminders") > 1190
    assert value(text, "clarion_sweep_recent_runs", sweep="reminders", status="ok") is None
    started = value(text, "clarion_sweep_last_run_timestamp_seconds", sweep="event relay")
    assert abs(started - (now - timedelta(seconds=20)).timestamp()) < 1
    assert value(text, "clarion_sweep_interval_seconds", sweep="delivery dispatch") > 0


def _bulk_window(type_id: int, rows: int) -> None:
    """`rows` sent email deliveries, each with one attempt inside the window, set-based."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_recipient (external_id, email, phone, locale, timezone,"
            " data, created_at, updated_at) VALUES ('bulk', '', '', '', '', '{}', now(), now())"
            " RETURNING id"
        )
        (recipient_id,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO notifications_event (id, type_id, recipients, actor, data, priority,"
            " status, created_at, fanout_page, fanout_source, fanout_cursor, recipient_count,"
            " relay_attempts) SELECT gen_random_uuid(), %s, '{}', '', '{}', 'normal', 'done',"
            " now() - interval '2 seconds', 0, 0, 0, 1, 0 FROM generate_series(1, %s)",
            [type_id, rows],
        )
        cursor.execute(
            "INSERT INTO notifications_notification (event_id, recipient_id, title, body, url,"
            " visible, created_at) SELECT id, %s, '', '', '', true, now()"
            " FROM notifications_event WHERE type_id = %s AND status = 'done'",
            [recipient_id, type_id],
        )
        cursor.execute(
            "INSERT INTO notifications_delivery (notification_id, channel, status, reason,"
            " address, attempts, provider, provider_message_id, created_at, updated_at)"
            " SELECT id, 'email', 'sent', '', '', 1, '', '', now(), now()"
            " FROM notifications_notification WHERE recipient_id = %s",
            [recipient_id],
        )
        cursor.execute(
            "INSERT INTO notifications_deliveryattempt (delivery_id, created_at, provider,"
            " outcome, response, error) SELECT d.id, now(), 'email:smtp:x', 'sent', '', ''"
            " FROM notifications_delivery d JOIN notifications_notification n"
            " ON n.id = d.notification_id WHERE n.recipient_id = %s",
            [recipient_id],
        )


@pytest.mark.django_db
def test_a_scrape_costs_the_same_few_queries_with_a_full_window(client, comment_type):
    attempt(delivery_row(comment_type, "s1", "email", status="sent"), "sent")
    scrape(client)  # warm-up: connection and settings
    with CaptureQueriesContext(connection) as small:
        scrape(client)
    _bulk_window(comment_type.id, 20_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as full:
        text = scrape(client)
    seconds = time.perf_counter() - started

    assert value(text, "clarion_delivery_attempts_last_minute", channel="email", outcome="sent")
    assert value(text, "clarion_delivery_latency_seconds_bucket", channel="email", le="+Inf") == (
        5_000
    )
    assert len(full.captured_queries) == len(small.captured_queries) == 11
    assert seconds < 2.0, f"a scrape over 20,000 attempts took {seconds:.3f}s"
    print(f"scrape over 20,000 attempts: {len(full.captured_queries)} queries, {seconds:.3f}s")


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
@pytest.mark.django_db
def test_promtool_finds_nothing_to_lint_in_the_new_families(client, comment_type):
    SweepRun.objects.create(name="event relay", started_at=timezone.now(), duration_ms=3)
    d = delivery_row(comment_type, "p1", "email", status="sent")
    attempt(d, "sent")

    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape(client), capture_output=True, text=True
    )

    problems = [
        line
        for line in (lint.stdout + lint.stderr).splitlines()
        if any(line.startswith(name) for name in NEW_FAMILIES)
    ]
    assert problems == []
