"""A page whose worker is SIGKILLed is taken up again within seconds, not after
the relay's stale time, and no page runs twice: a 100,000-recipient fan-out
survives three kills with every recipient notified exactly once."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from django.conf import settings
from django.db import connection

from notifications.services.relay import events_relay
from tests.helpers import event_row, scalar, subscribe_many, wait_for
from tests.workers import WorkerProcess, database_url_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

RECIPIENTS = 100_000
KILLS = 3
TAKEOVER_LIMIT_SECONDS = 15


class BeatRelay:
    """The relay on its Beat interval, in a thread (what Beat does in production)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopped.wait(settings.CLARION["RELAY_INTERVAL_SECONDS"]):
                events_relay()
        finally:
            connection.close()

    def __enter__(self) -> BeatRelay:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(10)


def test_a_killed_workers_page_is_taken_up_within_seconds_and_none_runs_twice(
    clean_redis, producer, comment_type
):
    worker = WorkerProcess(
        database_url=database_url_for(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        queues="normal",
        extra_env={"CLARION_FANOUT_PAGE_SIZE": "10000"},
    )
    worker.start()
    subscribe_many("takeover", RECIPIENTS)
    takeovers: list[float] = []
    try:
        with BeatRelay():
            started = time.monotonic()
            response = producer.post(
                "/api/v1/events",
                {
                    "type": "comment.created",
                    "recipients": [{"topic": "takeover"}],
                    "data": {"comment": "hi"},
                },
                format="json",
            )
            event_id = response.json()["id"]
            for kill in range(KILLS):
                wait_for(
                    lambda kill=kill: event_row(event_id)["page"] >= 2 * kill + 1,
                    timeout=60,
                    what="pages to commit",
                )
                page = event_row(event_id)["page"]
                assert event_row(event_id)["status"] == "processing", "finished before the kill"
                worker.kill()
                killed = time.monotonic()
                worker.start()  # what the respawner (make run) or Compose's restart policy does
                wait_for(
                    lambda page=page: event_row(event_id)["page"] > page,
                    timeout=60,
                    what="the page taken up",
                )
                takeovers.append(time.monotonic() - killed)
            wait_for(
                lambda: event_row(event_id)["status"] == "done",
                timeout=120,
                what="the fan-out to finish",
            )
            total = time.monotonic() - started
    finally:
        worker.stop()

    print(f"takeovers {[round(t, 1) for t in takeovers]} s, total {total:.1f} s")
    assert max(takeovers) < TAKEOVER_LIMIT_SECONDS
    assert event_row(event_id)["recipient_count"] == RECIPIENTS
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == RECIPIENTS
    )
    assert scalar("SELECT count(*) FROM notifications_delivery") == RECIPIENTS


def _lost_publish(producer, monkeypatch) -> str:
    """Accept an event while the broker is unreachable: committed, never queued."""
    from celery import Celery

    from notifications import publish

    unreachable = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    unreachable.conf.broker_connection_timeout = 0.5
    monkeypatch.setattr(publish, "app", unreachable)
    response = producer.post(
        "/api/v1/events",
        {"type": "comment.created", "recipients": ["lost"], "data": {}},
        format="json",
    )
    publish.publisher.flush()
    monkeypatch.undo()
    return response.json()["id"]


def test_a_lost_message_is_published_again_soon_when_its_queue_is_empty(
    producer, comment_type, monkeypatch, settings
):
    from notifications.services import relay

    _lost_publish(producer, monkeypatch)
    settings.CLARION = {**settings.CLARION, "RELAY_DEAD_PAGE_SECONDS": 0}
    monkeypatch.setattr(relay, "idle_queues", lambda: list(settings.PRIORITIES))

    assert events_relay() == 1  # well before RELAY_STALE_SECONDS (60 s)


def test_behind_a_backlog_a_waiting_event_is_left_to_the_stale_time(
    producer, comment_type, monkeypatch, settings
):
    from notifications.services import relay

    _lost_publish(producer, monkeypatch)
    settings.CLARION = {**settings.CLARION, "RELAY_DEAD_PAGE_SECONDS": 0}
    monkeypatch.setattr(
        relay, "idle_queues", lambda: ["critical", "high", "low"]
    )  # "normal" has a backlog

    assert events_relay() == 0


def test_idle_queues_are_the_priority_queues_with_nothing_waiting(monkeypatch, settings):
    """Against a private Redis no worker consumes from."""
    from notifications.services import relay
    from tests.redis_server import RedisServer

    broker = RedisServer()
    broker.start()
    try:
        settings.CELERY_BROKER_URL = broker.url
        monkeypatch.setattr(relay, "_broker", None)
        redis.Redis.from_url(broker.url).rpush("normal", b"{}")

        assert relay.idle_queues() == ["critical", "high", "low"]
    finally:
        relay._broker = None
        broker.stop()


def test_without_the_broker_no_queue_counts_as_idle(monkeypatch, settings):
    from notifications.services import relay

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(relay, "_broker", None)

    assert relay.idle_queues() == []
    relay._broker = None
