"""A Redis restart loses no accepted event and sends nothing twice."""

from __future__ import annotations

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection

from notifications import publish
from notifications.services.relay import events_relay
from tests.helpers import event_row, scalar, wait_for
from tests.workers import WorkerProcess, database_url_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

EVENT = {"type": "comment.created", "actor": "ana", "data": {"comment": "hi"}}


@pytest.fixture
def private_broker(private_redis, monkeypatch, settings):
    """The API process publishes to the private Redis, like the worker below
    (its wake-up keys too: they live on CELERY_BROKER_URL)."""
    settings.CELERY_BROKER_URL = private_redis.url
    app = Celery("clarion-private", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = private_redis.url
    app.conf.broker_connection_timeout = 1
    monkeypatch.setattr(publish, "app", app)
    return app


@pytest.fixture
def private_worker(private_redis, private_broker, django_db_setup):
    process = WorkerProcess(
        database_url=database_url_for(connection.settings_dict), redis_url=private_redis.url
    )
    yield process
    process.stop()


def post(producer, recipient: str) -> str:
    response = producer.post("/api/v1/events", {**EVENT, "recipients": [recipient]}, format="json")
    assert response.status_code == 202
    return response.json()["id"]


def done(event_id: str) -> bool:
    return event_row(event_id)["status"] == "done"


def test_queued_messages_survive_a_redis_restart(
    private_redis, private_worker, producer, comment_type
):
    # No worker yet: the message waits in Redis across the restart.
    event_id = post(producer, "queued-1")
    publish.publisher.flush()
    private_redis.stop()
    private_redis.start()
    private_worker.start()
    wait_for(lambda: done(event_id), timeout=30, what="the queued event to fan out")
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == 1
    )


def test_events_accepted_while_redis_is_down_are_relayed_once_it_is_back(
    private_redis, private_worker, producer, comment_type
):
    private_worker.start()
    before = post(producer, "before-1")
    wait_for(lambda: done(before), what="the first event")
    private_redis.stop()
    during = [post(producer, f"during-{n}") for n in range(3)]  # 202 although the broker is down
    publish.publisher.flush(timeout=30)
    assert all(event_row(e)["status"] == "accepted" for e in during)
    private_redis.start()

    def supervised() -> None:
        # Celery can exit when its broker vanishes mid-ack ("Unrecoverable error:
        # AttributeError ... 'hostname'"), even a moment after the broker is back;
        # a supervisor (Compose restart policy, make run) starts it again, as here.
        # Nothing accepted may be lost either way.
        if private_worker.process.poll() is not None:
            private_worker.start()

    settings.CLARION = {**settings.CLARION, "RELAY_STALE_SECONDS": 0}
    try:
        wait_for(
            lambda: supervised() or (events_relay() >= 0 and all(done(e) for e in during)),
            timeout=60,
            interval=0.5,
            what="relayed events to fan out",
        )
    finally:
        settings.CLARION = {**settings.CLARION, "RELAY_STALE_SECONDS": 60.0}
    assert scalar("SELECT count(*) FROM notifications_notification") == 4
    assert scalar("SELECT max(recipient_count) FROM notifications_event") == 1
