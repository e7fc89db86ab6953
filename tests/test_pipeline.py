"""The spine end to end: real PostgreSQL, real Redis, a real Celery worker."""

from __future__ import annotations

import pytest
from django.conf import settings

from config.celery import app
from notifications.publish import FAN_OUT_PAGE
from notifications.services.relay import events_relay
from tests.conftest import inbox_client
from tests.helpers import event_row, scalar, subscribe_many, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

EVENT = {"type": "comment.created", "actor": "ana", "data": {"comment": "hi", "post_id": 7}}


def post_event(producer, recipients, **extra) -> str:
    response = producer.post(
        "/api/v1/events", {**EVENT, "recipients": recipients, **extra}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def wait_done(event_id: str, timeout: float = 60.0) -> dict:
    return wait_for(
        lambda: (row := event_row(event_id))["status"] == "done" and row,
        timeout=timeout,
        what=f"event {event_id} to finish fan-out",
    )


def notification_count(event_id: str) -> int:
    return scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])


def test_posted_event_reaches_the_recipients_inbox(worker, clean_redis, producer, comment_type):
    event_id = post_event(producer, ["ana-1"])
    wait_done(event_id)
    items = inbox_client(producer, "ana-1").get("/api/v1/inbox").json()["results"]
    assert [(i["title"], i["body"], i["url"]) for i in items] == [
        ("ana commented", "hi", "/posts/7")
    ]


def test_batch_events_all_reach_their_inboxes(worker, clean_redis, producer, comment_type):
    events = [{**EVENT, "recipients": [f"b-{i}"]} for i in range(50)]
    results = producer.post("/api/v1/events/batch", {"events": events}, format="json").json()[
        "results"
    ]
    for result in results:
        wait_done(result["id"])
    assert scalar("SELECT count(*) FROM notifications_notification") == 50


def test_status_endpoint_reports_counts_by_channel(worker, clean_redis, producer, comment_type):
    event_id = post_event(producer, ["s-1", "s-2"])
    wait_done(event_id)
    body = producer.get(f"/api/v1/events/{event_id}").json()
    assert body["status"] == "done"
    assert body["recipient_count"] == 2
    assert body["deliveries"] == {"in_app": {"delivered": 2, "opened": 0}, "email": {"queued": 2}}


def test_page_message_delivered_twice_makes_no_duplicates(
    worker, clean_redis, producer, comment_type
):
    subscribe_many("dup", 3000)
    event_id = post_event(producer, [{"topic": "dup"}])
    # A redelivered message and a relayed one for every page, on top of the real chain.
    for page in range(4):
        for _ in range(2):
            app.send_task(FAN_OUT_PAGE, kwargs={"event_id": event_id, "page": page}, queue="normal")
    row = wait_done(event_id)
    assert row["recipient_count"] == 3000
    assert notification_count(event_id) == 3000
    assert scalar("SELECT count(*) FROM notifications_delivery") == 3000


def test_worker_killed_mid_fan_out_resumes_without_loss_or_duplicates(
    worker, clean_redis, producer, comment_type
):
    subscribe_many("kill", 60_000)
    event_id = post_event(producer, [{"topic": "kill"}])
    wait_for(lambda: event_row(event_id)["page"] >= 3, timeout=60, what="a few pages to commit")
    worker.kill()
    killed_at = event_row(event_id)
    assert killed_at["status"] == "processing", (
        "the fan-out finished before the kill; make the topic larger"
    )
    worker.start()
    # The page in flight died with the worker; its message sits unacked until the
    # visibility timeout. The relay publishes the page the event waits for.
    settings.CLARION = {**settings.CLARION, "RELAY_STALE_SECONDS": 0}
    try:
        wait_for(lambda: events_relay() or True, what="relay")
        row = wait_done(event_id, timeout=120)
    finally:
        settings.CLARION = {**settings.CLARION, "RELAY_STALE_SECONDS": 60.0}
    assert row["recipient_count"] == 60_000
    assert notification_count(event_id) == 60_000
    assert scalar("SELECT count(*) FROM notifications_delivery") == 60_000


def test_relay_recovers_an_event_whose_publish_was_lost(
    worker, clean_redis, producer, comment_type, monkeypatch
):
    # The broker is unreachable when the API publishes (nothing listens on port
    # 1): the event is committed, the publish fails, the 202 still stands.
    from celery import Celery

    from notifications import publish

    unreachable = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    unreachable.conf.broker_connection_timeout = 0.5
    monkeypatch.setattr(publish, "app", unreachable)
    event_id = post_event(producer, ["lost-1"])
    publish.publisher.flush()
    monkeypatch.undo()
    assert event_row(event_id)["status"] == "accepted"
    settings.CLARION = {**settings.CLARION, "RELAY_STALE_SECONDS": 0}
    try:
        assert events_relay() == 1
    finally:
        settings.CLARION = {**settings.CLARION, "RELAY_STALE_SECONDS": 60.0}
    assert wait_done(event_id)["recipient_count"] == 1


def test_relay_leaves_fresh_events_alone(worker, clean_redis, producer, comment_type):
    event_id = post_event(producer, ["fresh-1"])
    wait_done(event_id)
    assert events_relay() == 0


def test_scheduled_event_waits_in_the_table_until_due(worker, clean_redis, producer, comment_type):
    from django.db import connection

    event_id = post_event(producer, ["later-1"], send_at="2999-01-01T00:00:00Z")
    assert producer.get(f"/api/v1/events/{event_id}").json()["status"] == "scheduled"
    assert events_relay() == 0
    with connection.cursor() as cursor:
        cursor.execute("UPDATE notifications_event SET send_at = now() WHERE id = %s", [event_id])
    assert events_relay() == 1
    assert wait_done(event_id)["recipient_count"] == 1


def test_critical_event_is_not_stuck_behind_a_bulk_fan_out(
    worker, clean_redis, producer, comment_type
):
    subscribe_many("bulk-topic", 40_000, prefix="bt")
    bulk_id = post_event(producer, [{"topic": "bulk-topic"}], priority="low")
    wait_for(lambda: event_row(bulk_id)["page"] >= 1, what="bulk fan-out to start")
    urgent_id = post_event(producer, ["urgent-1"], priority="critical")
    wait_done(urgent_id, timeout=10)
    assert event_row(bulk_id)["status"] == "processing"
    wait_done(bulk_id, timeout=120)


def test_a_due_delivery_is_dispatched_rendered_and_settled_by_the_worker(
    worker, clean_redis, producer
):
    from delivery.services.dispatch import deliveries_dispatch_due
    from notifications.models import Delivery

    producer.put(
        "/api/v1/notification-types/mail.sent",
        {
            "category": "account",
            "channels": ["email"],
            "templates": {
                "email": {
                    "en": {"subject": "Hello {{ recipient.external_id }}", "text": "{{ note }}"}
                }
            },
        },
        format="json",
    )
    producer.put("/api/v1/recipients/mail-1", {"email": "mail-1@example.com"}, format="json")
    event_id = producer.post(
        "/api/v1/events",
        {"type": "mail.sent", "recipients": ["mail-1"], "priority": "high", "data": {"note": "hi"}},
        format="json",
    ).json()["id"]
    wait_done(event_id)

    assert deliveries_dispatch_due() == 1

    delivery = Delivery.objects.filter(notification__event_id=event_id)
    wait_for(lambda: delivery.get().status == "skipped", what="the worker to settle the delivery")
    settled = delivery.get()
    assert (settled.reason, settled.address) == ("no_provider", "mail-1@example.com")
    assert settled.content == {"subject": "Hello mail-1", "text": "hi"}
