"""Chaos: 10,008 deliveries across email, SMS and webhook while the send
worker is SIGKILLed five times, Redis is restarted once and the SMS provider
answers 503 for 60 s. At the end every delivery is sent or dead, none is
lost, and the only duplicates the servers saw carry the same Message-ID /
Idempotency-Key: deliveries whose worker died between the provider's accept
and the record. The test counts and reports them."""

from __future__ import annotations

import collections
import threading
import time

import pytest
from celery import Celery
from django.db import connection, connections

from delivery.services import dispatch
from delivery.services.dispatch import deliveries_dispatch_due
from notifications.models import Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from tests.fakes.smtp_server import FakeSmtpServer
from tests.fakes.twilio_server import TwilioFake
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.workers import WorkerProcess, database_url_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

EVENTS, PER_EVENT = 4, 834  # 4 × 834 recipients × 3 channels = 10,008 deliveries
CHANNELS = ["email", "sms", "webhook"]
SMS_OUTAGE_SECONDS = 60
KILL_AT = (8, 20, 32, 44, 56)  # seconds after the start
REDIS_RESTART_AT = 26
DEADLINE_SECONDS = 420
TYPE = {
    "category": "ops",
    "channels": CHANNELS,
    "templates": {
        "in_app": {"en": {"title": "Alert {{ n }}"}},
        "email": {"en": {"subject": "Alert {{ n }}", "text": "Alert {{ n }} for you"}},
        "sms": {"en": {"text": "Alert {{ n }}"}},
    },
}


@pytest.fixture
def servers():
    with FakeSmtpServer() as smtp, TwilioFake() as twilio, WebhookReceiver() as hooks:
        yield smtp, twilio, hooks


def _recipients(hooks: WebhookReceiver) -> list[str]:
    ids = [f"chaos-{i}" for i in range(EVENTS * PER_EVENT)]
    Recipient.objects.bulk_create(
        [
            Recipient(
                external_id=external_id,
                email=f"{external_id}@example.com",
                phone=f"+1555{i:07d}",
                data={"webhook_url": hooks.url(f"/hook/{external_id}")},
            )
            for i, external_id in enumerate(ids)
        ]
    )
    return ids


def _dispatcher(app: Celery, stop: threading.Event) -> threading.Thread:
    """What Beat does every second: hand due deliveries to the send workers."""

    def loop() -> None:
        while not stop.is_set():
            try:
                deliveries_dispatch_due()
            except Exception:  # noqa: BLE001 - Redis restarting; the next round claims again
                pass
            stop.wait(1.0)
        connections.close_all()

    thread = threading.Thread(target=loop, name="dispatcher", daemon=True)
    thread.start()
    return thread


def _statuses() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM notifications_delivery GROUP BY status")
        return dict(cursor.fetchall())


def _delivery_id(key: str) -> str:
    """The delivery id in `<clarion-delivery-N@host>` or `clarion-delivery-N`."""
    return key.strip("<>").split("@")[0].removeprefix("clarion-delivery-")


def _duplicates(keys: list[str]) -> dict[str, int]:
    return {key: n for key, n in collections.Counter(keys).items() if n > 1}


def test_deliveries_survive_worker_kills_a_redis_restart_and_a_provider_outage(
    api_key, private_redis, servers, monkeypatch, settings
):
    smtp, twilio, hooks = servers
    app = Celery("clarion-chaos", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = private_redis.url
    app.conf.broker_connection_timeout = 1
    monkeypatch.setattr(dispatch, "app", app)
    settings.CLARION = {**settings.CLARION, "DELIVERY_LEASE_SECONDS": 20}
    providers = f"email=smtp://127.0.0.1:{smtp.port},sms={twilio.provider_url()},webhook=webhook://"
    worker = WorkerProcess(
        database_url=database_url_for(connection.settings_dict),
        redis_url=private_redis.url,
        concurrency=2,
        extra_env={
            "CLARION_PROVIDERS": providers,
            "CLARION_WEBHOOK_ALLOW_PRIVATE": "1",
            "CLARION_DELIVERY_LEASE_SECONDS": "20",
            "CLARION_DELIVERY_RETRY_BASE_SECONDS": "0.5",
            "CLARION_DELIVERY_RETRY_MAX_SECONDS": "8",
            "CLARION_DELIVERY_MAX_ATTEMPTS": "40",
            "CLARION_BREAKER_COOLDOWN_SECONDS": "5",
            "CLARION_PROVIDER_TIMEOUT_SECONDS": "5",
            "CLARION_TRACK_OPENS": "0",
            "CLARION_TRACK_CLICKS": "0",
        },
    )
    notification_type_cache_clear()
    notification_type_put(key="chaos.alert", body=TYPE)
    ids = _recipients(hooks)
    for n in range(EVENTS):
        chunk = ids[n * PER_EVENT : (n + 1) * PER_EVENT]
        event = event_accept(
            api_key_id=api_key[0].id,
            body={"type": "chaos.alert", "recipients": chunk, "data": {"n": n}},
        )
        event_fan_out_page(event_id=event.id, page=0)
    total = sum(_statuses().values())
    assert total == EVENTS * PER_EVENT * len(CHANNELS)

    twilio.fail_next(10**9, status=503)  # the SMS provider is down for the first minute
    stop = threading.Event()
    worker.start()
    dispatcher = _dispatcher(app, stop)
    started = time.monotonic()
    events = sorted(
        [(t, "kill") for t in KILL_AT]
        + [(REDIS_RESTART_AT, "redis"), (SMS_OUTAGE_SECONDS, "sms_up")]
    )
    log = []
    try:
        for at, what in events:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if what == "kill":
                worker.kill()
                worker.start()
            elif what == "redis":
                private_redis.stop()
                private_redis.start()
            else:
                twilio.fail_next(0)
            log.append((round(time.monotonic() - started, 1), what, _statuses()))
        while time.monotonic() - started < DEADLINE_SECONDS:
            statuses = _statuses()
            if statuses.get("queued", 0) == 0:
                break
            time.sleep(1.0)
    finally:
        stop.set()
        dispatcher.join(10)
        worker.stop()

    statuses = _statuses()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, channel FROM notifications_delivery WHERE status IN ('sent', 'delivered')"
        )
        sent = cursor.fetchall()
    email_ids = [m.message["Message-ID"] for m in smtp.messages]
    sms_keys = [r.idempotency_key for r in twilio.requests if r.status == 201]
    hook_keys = [r.headers.get("idempotency-key", "") for r in hooks.requests]
    duplicates = {
        "email": _duplicates(email_ids),
        "sms": _duplicates(sms_keys),
        "webhook": _duplicates(hook_keys),
    }
    print(
        f"\nchaos: {total} deliveries, final {statuses}, after"
        f" {time.monotonic() - started:.0f}s; duplicates by channel:"
        f" { {c: sum(n - 1 for n in d.values()) for c, d in duplicates.items()} };"
        f" timeline {log}"
    )

    assert set(statuses) <= {"sent", "delivered", "dead"}, statuses
    assert sum(statuses.values()) == total  # none lost
    received = {
        "email": {_delivery_id(mid) for mid in email_ids},
        "sms": {key.removeprefix("clarion-delivery-") for key in sms_keys},
        "webhook": {key.removeprefix("clarion-delivery-") for key in hook_keys},
    }
    for delivery_id, channel in sent:  # every delivery recorded as sent reached its server
        assert str(delivery_id) in received[channel], (delivery_id, channel)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM notifications_delivery")
        all_ids = {str(i) for (i,) in cursor.fetchall()}
    for dups in duplicates.values():
        for key in dups:  # a duplicate is always a re-send of one delivery, never a stranger
            assert key and _delivery_id(key) in all_ids
    # A kill loses at most the batches in flight: two processes, 100 messages each.
    assert sum(n - 1 for d in duplicates.values() for n in d.values()) <= len(KILL_AT) * 2 * 100
