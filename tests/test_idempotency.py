"""Idempotency keys: one event per key, a replay answers the same, a new body conflicts."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from notifications.models import Event

EVENT = {"type": "comment.created", "recipients": ["u1"], "data": {"comment": "hi"}}


@pytest.mark.django_db
def test_same_key_and_body_returns_the_same_response_and_no_new_event(producer, comment_type):
    first = producer.post("/api/v1/events", {**EVENT, "idempotency_key": "k-1"}, format="json")
    second = producer.post("/api/v1/events", {**EVENT, "idempotency_key": "k-1"}, format="json")
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_key_in_header_counts_like_key_in_body(producer, comment_type):
    first = producer.post("/api/v1/events", EVENT, format="json", HTTP_IDEMPOTENCY_KEY="h-1")
    second = producer.post("/api/v1/events", EVENT, format="json", HTTP_IDEMPOTENCY_KEY="h-1")
    assert first.json() == second.json()
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_same_key_with_another_body_is_409(producer, comment_type):
    producer.post("/api/v1/events", {**EVENT, "idempotency_key": "k-2"}, format="json")
    response = producer.post(
        "/api/v1/events",
        {**EVENT, "data": {"comment": "other"}, "idempotency_key": "k-2"},
        format="json",
    )
    assert response.status_code == 409
    assert "idempotency_key" in response.json()["errors"]
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_keys_of_different_producers_do_not_collide(producer, comment_type):
    from notifications.api.auth import api_key_create

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='other')[1]}")
    a = producer.post("/api/v1/events", {**EVENT, "idempotency_key": "same"}, format="json").json()
    b = other.post("/api/v1/events", {**EVENT, "idempotency_key": "same"}, format="json").json()
    assert a["id"] != b["id"]


@pytest.mark.django_db
def test_duplicate_keys_inside_one_batch_make_one_event(producer, comment_type):
    item = {**EVENT, "idempotency_key": "b-1"}
    results = producer.post(
        "/api/v1/events/batch", {"events": [item, item, {**item, "data": {}}]}, format="json"
    ).json()["results"]
    assert results[0] == results[1]
    assert results[2]["status"] == 409
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_batch_replays_keys_accepted_earlier(producer, comment_type):
    single = producer.post(
        "/api/v1/events", {**EVENT, "idempotency_key": "b-2"}, format="json"
    ).json()
    results = producer.post(
        "/api/v1/events/batch", {"events": [{**EVENT, "idempotency_key": "b-2"}]}, format="json"
    ).json()["results"]
    assert results == [single]


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_make_exactly_one_event(api_key, comment_type):
    raw_key = api_key[1]
    barrier = threading.Barrier(8)
    responses = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait()
        try:
            responses.append(
                client.post("/api/v1/events", {**EVENT, "idempotency_key": "race"}, format="json")
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [202] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_duplicates_in_one_write_of_a_key_stored_earlier_all_answer_the_stored_id(
    api_key, comment_type
):
    from notifications.services.events import event_parse, events_accept_parsed

    body = {**EVENT, "idempotency_key": "stored"}
    stored = events_accept_parsed(api_key_id=api_key[0].id, events=[event_parse(body)])[0]

    again = events_accept_parsed(
        api_key_id=api_key[0].id,
        events=[event_parse(body), event_parse(body), event_parse({**body, "actor": "other"})],
    )

    assert [answer.id for answer in again[:2]] == [stored.id, stored.id]
    assert again[2].status == 409
    assert Event.objects.count() == 1
