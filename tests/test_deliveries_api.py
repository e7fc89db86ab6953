"""GET /api/v1/deliveries (keyset pages with attempts) and POST
/api/v1/deliveries/replay, with hostile input answered as problem+json."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Delivery
from tests.providers import PrimaryProvider
from tests.test_delivery_retries import email_of, later, send_due
from tests.test_dispatch import NIGHT, send_event


@pytest.fixture
def dead_and_sent(api_key, social_type, chain):
    chain("tests.providers.PrimaryProvider", BREAKER_MIN_CALLS=1000)
    PrimaryProvider.reset([503, 503, 503])
    dead = send_event(api_key, "dead1", NIGHT)
    for day in range(3):
        send_due(now=later(86400 * (day + 1)))
    PrimaryProvider.reset()
    sent = send_event(api_key, "sent1", NIGHT)
    send_due(now=later(86400 * 5))
    return email_of(dead), email_of(sent)


@pytest.mark.django_db
def test_deliveries_are_listed_newest_first_with_their_attempts(producer, dead_and_sent):
    dead, sent = dead_and_sent

    body = producer.get("/api/v1/deliveries?channel=email").json()

    assert [d["id"] for d in body["results"]] == [sent.id, dead.id]
    listed_dead = body["results"][1]
    assert listed_dead["status"] == "dead" and listed_dead["recipient"] == "dead1"
    assert [a["status_code"] for a in listed_dead["attempts"]] == [503, 503, 503]
    assert {"at", "provider", "outcome", "error", "duration_ms"} <= set(listed_dead["attempts"][0])
    assert listed_dead["event"] and "next_attempt_at" in listed_dead


@pytest.mark.django_db
def test_deliveries_filter_by_status_event_and_recipient(producer, dead_and_sent):
    dead, sent = dead_and_sent
    event = str(sent.notification.event_id)

    assert [d["id"] for d in producer.get("/api/v1/deliveries?status=dead").json()["results"]] == [
        dead.id
    ]
    by_event = producer.get(f"/api/v1/deliveries?event={event}").json()["results"]
    assert {d["id"] for d in by_event} >= {sent.id} and dead.id not in {d["id"] for d in by_event}
    by_recipient = producer.get("/api/v1/deliveries?recipient=dead1").json()["results"]
    assert {d["recipient"] for d in by_recipient} == {"dead1"}


@pytest.mark.django_db
def test_the_cursor_pages_through_every_delivery_once(producer, dead_and_sent):
    seen, cursor = [], None
    while True:
        url = "/api/v1/deliveries?limit=1" + (f"&cursor={cursor}" if cursor else "")
        body = producer.get(url).json()
        seen += [d["id"] for d in body["results"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == Delivery.objects.count()


@pytest.mark.django_db
def test_a_page_is_two_statements_whatever_its_size(producer, dead_and_sent):
    from notifications.services.deliveries import DeliveryFilter, deliveries_page

    with CaptureQueriesContext(connection) as queries:
        deliveries_page(where=DeliveryFilter(), cursor=None, limit=500)
    assert len(queries) == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, field",
    [
        ("event=not-a-uuid", "event"),
        ("channel=pigeon", "channel"),
        ("status=lost", "status"),
        ("recipient=" + "x" * 200, "recipient"),
        ("recipient=a%00b", "recipient"),
        ("cursor=forged", "cursor"),
        ("cursor=%00", "cursor"),
        ("limit=0", "limit"),
        ("limit=99999999999999999999999", "limit"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(producer, query, field):
    response = producer.get(f"/api/v1/deliveries?{query}")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")
    assert field in response.json()["errors"]


@pytest.mark.django_db
def test_replay_by_status_and_channel_queues_the_dead_ones_only(producer, dead_and_sent):
    dead, sent = dead_and_sent

    response = producer.post(
        "/api/v1/deliveries/replay", {"status": "dead", "channel": "email"}, format="json"
    )

    assert (response.status_code, response.json()) == (202, {"replayed": 1})
    dead.refresh_from_db()
    sent.refresh_from_db()
    assert (dead.status, dead.attempts, sent.status) == ("queued", 0, "sent")


@pytest.mark.django_db
def test_replay_by_ids_skips_a_delivered_one(producer, dead_and_sent):
    dead, sent = dead_and_sent

    response = producer.post(
        "/api/v1/deliveries/replay", {"ids": [dead.id, sent.id]}, format="json"
    )

    assert response.json() == {"replayed": 1}


@pytest.mark.django_db
def test_fifty_identical_replays_at_once_queue_a_delivery_once(dead_and_sent):
    from notifications.services.deliveries import ReplaySelection, deliveries_replay

    dead, _ = dead_and_sent
    assert sum(deliveries_replay(ReplaySelection(ids=[dead.id])) for _ in range(50)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "status"),
        ({"status": "sent"}, "status"),
        ({"status": "dead", "channel": "pigeon"}, "channel"),
        ({"ids": []}, "ids"),
        ({"ids": "1"}, "ids"),
        ({"ids": [2**70]}, "ids"),
        ({"ids": [True]}, "ids"),
        ({"ids": [1.5]}, "ids"),
        ({"ids": list(range(1, 10_002))}, "ids"),
        ({"ids": [1], "status": "dead"}, "ids"),
        ({"status": "dead", "extra": 1}, "extra"),
        ([], "body"),
    ],
)
def test_a_bad_replay_request_is_a_422_naming_the_field(producer, body, field):
    response = producer.post("/api/v1/deliveries/replay", body, format="json")
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"]


@pytest.mark.django_db
def test_deliveries_need_a_producer_key(client):
    assert client.get("/api/v1/deliveries").status_code == 401
    assert (
        client.post("/api/v1/deliveries/replay", {}, content_type="application/json").status_code
        == 401
    )


@pytest.mark.django_db
def test_the_replay_command_queues_dead_letters_with_progress_output(dead_and_sent):
    from io import StringIO

    from django.core.management import call_command

    dead, _ = dead_and_sent
    out, err = StringIO(), StringIO()

    call_command(
        "deliveries", "replay", "--status", "dead", "--channel", "email", stdout=out, stderr=err
    )

    dead.refresh_from_db()
    assert dead.status == "queued"
    assert "1 deliveries queued again" in out.getvalue()


@pytest.mark.django_db
def test_the_list_command_shows_dead_letters_with_their_last_error(dead_and_sent):
    from io import StringIO

    from django.core.management import call_command

    dead, _ = dead_and_sent
    out = StringIO()
    call_command("deliveries", "list", "--status", "dead", stdout=out)
    assert str(dead.id) in out.getvalue() and "http_503" in out.getvalue()
