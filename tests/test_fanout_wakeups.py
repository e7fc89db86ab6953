"""One pending wake-up per priority carries the fan-out of many small events."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from celery import Celery

from notifications import publish, wakeups
from notifications.services.relay import events_relay
from tests.helpers import scalar, wait_for
from tests.redis_server import RedisServer


@pytest.fixture
def private_broker(monkeypatch, settings):
    """A Redis no worker consumes from: the messages published stay there to count."""
    server = RedisServer()
    server.start()
    settings.CELERY_BROKER_URL = server.url  # where wake-up keys live, as in every process
    app = Celery("wakeup-test", broker=server.url, set_as_current=False)
    monkeypatch.setattr(publish, "app", app)
    try:
        yield redis.Redis.from_url(server.url)
    finally:
        app.close()
        server.stop()


def messages(client: redis.Redis, queue: str) -> list[dict]:
    """Oldest first (kombu pushes on the left and pops on the right)."""
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]


def task_kwargs(message: dict) -> dict:
    import base64

    body = json.loads(base64.b64decode(message["body"]))
    return body[1]


def test_small_events_committed_while_a_wake_up_is_pending_publish_nothing(private_broker):
    for n in range(50):
        publish.publish_grouped([(f"0000000{n}", "normal", True)])

    queued = messages(private_broker, "normal")
    assert len(queued) == 1
    assert task_kwargs(queued[0]) == {"event_ids": ["00000000"], "sweep": "normal"}


def test_each_priority_has_its_own_wake_up(private_broker):
    publish.publish_grouped([("a", "normal", True), ("b", "critical", True), ("c", "normal", True)])
    publish.publish_grouped([("d", "critical", True)])

    assert len(messages(private_broker, "normal")) == 1
    assert len(messages(private_broker, "critical")) == 1


def test_events_with_topics_are_always_published(private_broker):
    publish.publish_grouped([("a", "normal", True)])
    publish.publish_grouped([("t1", "normal", False), ("b", "normal", True)])
    publish.publish_grouped([("t2", "normal", False)])

    kwargs = [task_kwargs(m) for m in messages(private_broker, "normal")]
    assert kwargs[0] == {"event_ids": ["a"], "sweep": "normal"}
    assert [k.get("event_id") or k.get("event_ids") for k in kwargs[1:]] == ["t1", "t2"]


def test_once_a_sweep_has_begun_the_next_small_event_publishes_again(private_broker):
    publish.publish_grouped([("a", "normal", True)])
    wakeups.wake_release("normal")  # what a sweep does in its lane before reading what waits
    publish.publish_grouped([("b", "normal", True)])

    assert len(messages(private_broker, "normal")) == 2


def test_a_wake_up_key_outlives_its_message_by_at_most_the_ttl(private_broker):
    publish.publish_grouped([("a", "normal", True)])

    assert 0 < private_broker.ttl(wakeups._key("normal")) <= wakeups.WAKE_TTL_SECONDS


def test_without_redis_every_small_event_is_published(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    assert wakeups.wake_claim("normal") is True
    wakeups.wake_release("normal")  # no error: the key expires by itself


@pytest.mark.django_db(transaction=True)
def test_concurrent_single_events_are_each_fanned_out_once(worker, producer, comment_type):
    """50 producers at once, each its own commit and, mostly, no message of its own."""
    answers: list[str] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=producer._credentials["HTTP_AUTHORIZATION"])
        response = client.post(
            "/api/v1/events",
            {"type": "comment.created", "recipients": [f"w{n}", "w-shared"], "data": {"n": n}},
            format="json",
        )
        assert response.status_code == 202
        with lock:
            answers.append(response.json()["id"])

    threads = [threading.Thread(target=post, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    publish.publisher.flush()

    wait_for(
        lambda: (
            scalar(
                "SELECT count(*) FROM notifications_event WHERE status = 'done'"
                " AND id = ANY(%s::uuid[])",
                [answers],
            )
            == 50
        ),
        timeout=30,
        what="all fanned out",
    )
    assert (
        scalar(
            "SELECT count(*) FROM notifications_notification WHERE event_id = ANY(%s::uuid[])",
            [answers],
        )
        == 100
    )
    assert (
        scalar(
            "SELECT count(DISTINCT (event_id, recipient_id)) FROM notifications_notification"
            " WHERE event_id = ANY(%s::uuid[])",
            [answers],
        )
        == 100
    )


@pytest.mark.django_db(transaction=True)
def test_an_event_behind_a_lost_wake_up_is_fanned_out_by_the_relay(
    worker, producer, comment_type, monkeypatch, settings
):
    from notifications.services import relay

    # A wake-up key whose message was lost (its worker died before starting it).
    assert wakeups.wake_claim("normal")
    response = producer.post(
        "/api/v1/events",
        {"type": "comment.created", "recipients": ["behind-lost"], "data": {}},
        format="json",
    )
    publish.publisher.flush()
    event_id = response.json()["id"]
    assert scalar("SELECT status FROM notifications_event WHERE id = %s", [event_id]) == "accepted"

    settings.CLARION = {**settings.CLARION, "RELAY_DEAD_PAGE_SECONDS": 0}
    monkeypatch.setattr(relay, "idle_queues", lambda: list(settings.PRIORITIES))
    assert events_relay() == 1

    wait_for(
        lambda: (
            scalar("SELECT status FROM notifications_event WHERE id = %s", [event_id]) == "done"
        ),
        timeout=20,
        what="relayed event fanned out",
    )
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == 1
    )


def _accept(api_key, recipient: str) -> str:
    from notifications.services.events import event_accept

    event_id = str(
        event_accept(
            api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": [recipient]}
        ).id
    )
    publish.publisher.flush()
    return event_id


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_during_a_sweep_is_swept_by_the_same_task_without_a_message(
    private_broker, api_key, comment_type, monkeypatch
):
    from notifications import tasks
    from notifications.services import fanout_small

    first = _accept(api_key, "during-1")  # claims the key and publishes the wake-up
    kept = fanout_small._wake_up_kept
    came_in: list[str] = []

    def a_producer_commits_before_the_release(priority, outcome):
        if not came_in:
            came_in.append(_accept(api_key, "during-2"))  # loses the claim: the key is still held
        return kept(priority, outcome)

    monkeypatch.setattr(fanout_small, "_wake_up_kept", a_producer_commits_before_the_release)
    tasks._run_first_pages([first], sweep="normal")

    assert (
        scalar(
            "SELECT count(*) FROM notifications_event"
            " WHERE status = 'done' AND id = ANY(%s::uuid[])",
            [[first, *came_in]],
        )
        == 2
    )
    assert len(messages(private_broker, "normal")) == 1  # the first event's wake-up only
    assert not private_broker.exists(wakeups._key("normal"))


@pytest.mark.django_db(transaction=True)
def test_a_task_past_its_sweep_time_hands_its_wake_up_to_a_new_message(
    private_broker, api_key, comment_type, monkeypatch
):
    from notifications import tasks
    from notifications.services import fanout_small

    first = _accept(api_key, "handoff-1")
    kept = fanout_small._wake_up_kept
    came_in: list[str] = []

    def a_producer_commits_before_the_release(priority, outcome):
        if not came_in:
            came_in.append(_accept(api_key, "handoff-2"))
        return kept(priority, outcome)

    monkeypatch.setattr(fanout_small, "_wake_up_kept", a_producer_commits_before_the_release)
    monkeypatch.setattr(tasks, "SWEEP_TASK_SECONDS", 0.0)
    tasks._run_first_pages([first], sweep="normal")

    assert (
        scalar("SELECT status FROM notifications_event WHERE id = %s", [came_in[0]]) == "accepted"
    )
    queued = messages(private_broker, "normal")
    assert len(queued) == 2
    assert task_kwargs(queued[1]) == {"event_ids": [], "sweep": "normal"}
    assert private_broker.exists(wakeups._key("normal"))  # held for that message
