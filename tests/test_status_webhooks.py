"""Status webhooks: a producer's endpoints (API), the outbox rows a status
change writes (notifications/services/status_webhooks.py), and the sweep
that sends them signed and retries them (delivery/services/status_webhooks.py).

Receivers are real HTTP servers on 127.0.0.1, so WEBHOOK_ALLOW_PRIVATE is on."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from delivery.services.backoff import retry_delay
from delivery.services.status_webhooks import status_webhook_calls_claim, status_webhooks_send_due
from delivery.tasks import status_webhooks_send
from notifications.api.auth import api_key_create
from notifications.models import Delivery, StatusWebhookCall, WebhookEndpoint
from notifications.schedules import schedules
from notifications.selectors import notification_type_cache_clear
from notifications.services.delivery_status import deliveries_advance
from notifications.services.status_webhooks import (
    EVENT_TYPES,
    status_events_record,
    subscribed_cache_clear,
    subscribed_event_types,
)
from notifications.services.types import notification_type_put
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.helpers import run_concurrently
from tests.test_dispatch import NIGHT, TYPE, deliveries_of, send_event

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.CLARION = {
        **settings.CLARION,
        "WEBHOOK_ALLOW_PRIVATE": True,
        "PROVIDER_TIMEOUT_SECONDS": 5.0,
        "DELIVERY_MAX_ATTEMPTS": 3,
        "DELIVERY_RETRY_BASE_SECONDS": 10.0,
        "DELIVERY_RETRY_MAX_SECONDS": 100.0,
    }


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def subscribe(producer, django_capture_on_commit_callbacks):
    """Register an endpoint through the API (its cache clearing run on commit)."""

    def create(url: str, event_types: list[str], client: APIClient = producer) -> dict:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/api/v1/webhook-endpoints", {"url": url, "event_types": event_types}, format="json"
            )
        assert response.status_code == 201, response.content
        return response.json()

    return create


@pytest.fixture
def social_type(db, clean_redis):
    """comment.created on in_app, email and sms (tests/test_dispatch.py's type)."""
    notification_type_cache_clear()
    return notification_type_put(key="comment.created", body=TYPE)[0]


@pytest.fixture
def delivery(api_key, social_type):
    """An email delivery of a fresh event to recipient `ro`."""
    event_id = send_event(api_key, "ro", NIGHT)
    return next(d for d in deliveries_of(event_id) if d.channel == "email")


def calls() -> list[StatusWebhookCall]:
    return list(StatusWebhookCall.objects.order_by("id"))


def later(seconds: float = 0.0):
    return timezone.now() + timedelta(seconds=seconds)


# --- the endpoints API -------------------------------------------------------


@pytest.mark.django_db
def test_creating_an_endpoint_answers_201_with_its_secret(producer, clean_redis):
    response = producer.post(
        "/api/v1/webhook-endpoints",
        {"url": "https://hooks.example.com/clarion", "event_types": ["delivery.sent"]},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "url", "event_types", "secret", "created_at"}
    assert (body["url"], body["event_types"]) == (
        "https://hooks.example.com/clarion",
        ["delivery.sent"],
    )
    assert body["secret"].startswith("whsec_")
    Webhook(body["secret"])  # a valid Standard Webhooks secret
    assert WebhookEndpoint.objects.get(id=body["id"]).secret == body["secret"]


@pytest.mark.django_db
def test_listing_endpoints_never_shows_their_secrets(producer, subscribe, clean_redis):
    created = subscribe("https://hooks.example.com/a", ["delivery.failed", "delivery.dead"])
    response = producer.get("/api/v1/webhook-endpoints")
    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "id": created["id"],
            "url": "https://hooks.example.com/a",
            "event_types": ["delivery.failed", "delivery.dead"],
            "created_at": created["created_at"],
        }
    ]


@pytest.mark.django_db
def test_an_endpoint_is_seen_and_removed_only_by_its_own_api_key(producer, subscribe, clean_redis):
    created = subscribe("https://hooks.example.com/a", ["delivery.sent"])
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='other')[1]}")

    assert other.get("/api/v1/webhook-endpoints").json()["results"] == []
    response = other.delete(f"/api/v1/webhook-endpoints/{created['id']}")
    assert (response.status_code, response["Content-Type"]) == (404, PROBLEM)
    assert WebhookEndpoint.objects.filter(id=created["id"]).exists()


@pytest.mark.django_db
def test_deleting_an_endpoint_removes_it_and_its_queued_calls(
    producer, subscribe, delivery, clean_redis, django_capture_on_commit_callbacks
):
    created = subscribe("https://hooks.example.com/a", ["delivery.sent"])
    assert status_events_record("delivery.sent", delivery_ids=[delivery.id]) == 1

    with django_capture_on_commit_callbacks(execute=True):
        assert producer.delete(f"/api/v1/webhook-endpoints/{created['id']}").status_code == 204

    assert producer.get("/api/v1/webhook-endpoints").json()["results"] == []
    assert calls() == []
    assert status_events_record("delivery.sent", delivery_ids=[delivery.id]) == 0
    assert producer.delete(f"/api/v1/webhook-endpoints/{created['id']}").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "endpoint_id", ["not-a-uuid", "1", "x" * 5000, "%00", str(uuid.uuid4()), "%F0%9F%92%A9"]
)
def test_deleting_an_unknown_or_malformed_id_is_404_problem_json(producer, endpoint_id):
    response = producer.delete(f"/api/v1/webhook-endpoints/{endpoint_id}")
    assert (response.status_code, response["Content-Type"]) == (404, PROBLEM)


GOOD_URL = "https://hooks.example.com/x"
GOOD_TYPES = ["delivery.sent"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"event_types": GOOD_TYPES}, "url"),
        ({"url": None, "event_types": GOOD_TYPES}, "url"),
        ({"url": 42, "event_types": GOOD_TYPES}, "url"),
        ({"url": ["https://a.example"], "event_types": GOOD_TYPES}, "url"),
        ({"url": {"a": 1}, "event_types": GOOD_TYPES}, "url"),
        ({"url": "", "event_types": GOOD_TYPES}, "url"),
        ({"url": "https://" + "a" * 100_000 + ".com/", "event_types": GOOD_TYPES}, "url"),
        ({"url": "https://exa mple.com/", "event_types": GOOD_TYPES}, "url"),
        ({"url": "file:///etc/passwd", "event_types": GOOD_TYPES}, "url"),
        ({"url": "gopher://hooks.example.com/", "event_types": GOOD_TYPES}, "url"),
        ({"url": "http://169.254.169.254/latest", "event_types": GOOD_TYPES}, "url"),
        ({"url": "https://", "event_types": GOOD_TYPES}, "url"),
        ({"url": GOOD_URL}, "event_types"),
        ({"url": GOOD_URL, "event_types": []}, "event_types"),
        ({"url": GOOD_URL, "event_types": "delivery.sent"}, "event_types"),
        ({"url": GOOD_URL, "event_types": ["delivery.exploded"]}, "event_types"),
        ({"url": GOOD_URL, "event_types": [1, None]}, "event_types"),
        ({"url": GOOD_URL, "event_types": [["delivery.sent"]]}, "event_types"),
        ({"url": GOOD_URL, "event_types": {"delivery.sent": True}}, "event_types"),
        ({"url": GOOD_URL, "event_types": ["x" * 100_000]}, "event_types"),
        ([GOOD_URL], "non_field_errors"),
        ("https://hooks.example.com/", "non_field_errors"),
        (17, "non_field_errors"),
    ],
)
def test_invalid_endpoints_are_422_naming_the_field(producer, body, field):
    response = producer.post(
        "/api/v1/webhook-endpoints", json.dumps(body), content_type="application/json"
    )
    assert (response.status_code, response["Content-Type"]) == (422, PROBLEM)
    assert field in response.json()["errors"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_a_private_url_is_refused_without_the_dev_setting(producer, settings):
    settings.CLARION = {**settings.CLARION, "WEBHOOK_ALLOW_PRIVATE": False}
    response = producer.post(
        "/api/v1/webhook-endpoints",
        {"url": "http://127.0.0.1:9000/hook", "event_types": GOOD_TYPES},
        format="json",
    )
    assert response.status_code == 422
    assert "loopback" in response.json()["errors"]["url"][0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (
            b'{"url": "https://hooks.example.com/\\u0000", "event_types": ["delivery.sent"]}',
            "application/json",
            400,
        ),
        (b'{"url": "https://a.example", "event_types": [', "application/json", 400),
        (b"", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"url=https://a.example", "application/x-www-form-urlencoded", 415),
    ],
)
def test_malformed_bodies_are_4xx_problem_json(producer, raw, content_type, status):
    response = producer.generic("POST", "/api/v1/webhook-endpoints", raw, content_type=content_type)
    assert (response.status_code, response["Content-Type"]) == (status, PROBLEM)


@pytest.mark.django_db
def test_the_endpoints_need_an_api_key():
    response = APIClient().get("/api/v1/webhook-endpoints")
    assert (response.status_code, response["Content-Type"]) == (401, PROBLEM)


# --- recording ---------------------------------------------------------------


@pytest.mark.django_db
def test_recording_with_no_endpoint_costs_no_query_once_cached(delivery, clean_redis):
    subscribed_cache_clear()
    assert status_events_record("delivery.sent", delivery_ids=[delivery.id]) == 0
    with CaptureQueriesContext(connection) as queries:
        for event_type in EVENT_TYPES:
            assert (
                status_events_record(event_type, delivery_ids=[delivery.id], notification_ids=[1])
                == 0
            )
    assert len(queries) == 0


@pytest.mark.django_db
def test_recording_nothing_costs_nothing(clean_redis):
    with CaptureQueriesContext(connection) as queries:
        assert status_events_record("delivery.sent", delivery_ids=[]) == 0
    assert len(queries) == 0


@pytest.mark.django_db
def test_recording_is_one_statement_for_every_endpoint_and_delivery(
    api_key,
    social_type,
    subscribe,
    clean_redis,
):
    for n in range(3):
        subscribe(f"https://hooks.example.com/{n}", ["delivery.sent"])
    subscribe("https://hooks.example.com/failures", ["delivery.failed"])
    ids = [d.id for r in ("r1", "r2") for d in deliveries_of(send_event(api_key, r, NIGHT))]
    subscribed_event_types()  # cached, as on every send but the first

    with CaptureQueriesContext(connection) as queries:
        assert status_events_record("delivery.sent", delivery_ids=ids) == 3 * len(ids)
    assert len(queries) == 1
    assert {c.event_type for c in calls()} == {"delivery.sent"}
    assert len({c.message_id for c in calls()}) == 3 * len(ids)


@pytest.mark.django_db
def test_an_endpoint_created_after_a_cached_nothing_is_seen_at_once(
    delivery, subscribe, clean_redis
):
    assert status_events_record("delivery.sent", delivery_ids=[delivery.id]) == 0
    subscribe("https://hooks.example.com/x", ["delivery.sent"])
    assert status_events_record("delivery.sent", delivery_ids=[delivery.id]) == 1


@pytest.mark.django_db
def test_a_recorded_delivery_event_carries_what_happened(delivery, subscribe, clean_redis):
    subscribe("https://hooks.example.com/x", ["delivery.failed"])
    Delivery.objects.filter(id=delivery.id).update(status="failed", reason="http_400")

    status_events_record("delivery.failed", delivery_ids=[delivery.id])

    [call] = calls()
    assert call.message_id.startswith("msg_") and len(call.message_id) == 36
    assert (call.status, call.attempts) == ("queued", 0)
    assert call.next_attempt_at <= timezone.now()
    payload = call.payload
    assert payload["type"] == "delivery.failed"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {
        "delivery_id": delivery.id,
        "event_id": str(delivery.notification.event_id),
        "recipient": "ro",
        "channel": "email",
        "status": "failed",
        "reason": "http_400",
    }


@pytest.mark.django_db
def test_a_recorded_read_carries_the_notification(delivery, subscribe, clean_redis):
    subscribe("https://hooks.example.com/x", ["notification.read"])
    notification = delivery.notification

    assert status_events_record("notification.read", notification_ids=[notification.id]) == 1
    assert calls()[0].payload["data"] == {
        "notification_id": notification.id,
        "event_id": str(notification.event_id),
        "recipient": "ro",
    }


def test_an_unknown_event_type_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown status event type"):
        status_events_record("delivery.exploded", delivery_ids=[1])


# --- sending -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_recorded_event_reaches_the_receiver_signed_and_verifiable(
    receiver, delivery, subscribe, clean_redis
):
    endpoint = subscribe(receiver.url("/status"), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])

    assert status_webhooks_send_due() == {"sent": 1}

    [request] = receiver.requests
    [call] = calls()
    assert request.path == "/status"
    assert request.headers["webhook-id"] == call.message_id
    payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert payload == call.payload
    assert payload["data"]["delivery_id"] == delivery.id
    assert (call.status, call.attempts, call.last_status_code) == ("sent", 1, 200)
    assert call.sent_at is not None and call.next_attempt_at is None
    assert status_webhooks_send_due() == {}


@pytest.mark.django_db
def test_each_endpoint_signs_with_its_own_secret(receiver, delivery, subscribe, clean_redis):
    first = subscribe(receiver.url("/one"), ["delivery.sent"])
    second = subscribe(receiver.url("/two"), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])

    assert status_webhooks_send_due() == {"sent": 2}

    by_path = {r.path: r for r in receiver.requests}
    Webhook(first["secret"]).verify(by_path["/one"].body, by_path["/one"].headers)
    Webhook(second["secret"]).verify(by_path["/two"].body, by_path["/two"].headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(first["secret"]).verify(by_path["/two"].body, by_path["/two"].headers)


@pytest.mark.django_db
def test_a_503_is_retried_with_backoff_then_dead_after_the_max_attempts(
    receiver, delivery, subscribe, clean_redis
):
    receiver.answer(503)
    subscribe(receiver.url(), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])

    before = timezone.now()
    assert status_webhooks_send_due() == {"queued": 1}
    [call] = calls()
    assert (call.status, call.attempts, call.last_status_code) == ("queued", 1, 503)
    assert call.last_error.startswith("http_503")
    # Full jitter below base * 2**attempts (10 s * 2).
    assert before <= call.next_attempt_at <= later(20 + 1)
    assert status_webhooks_send_due(now=call.next_attempt_at - timedelta(seconds=0.001)) == {}

    assert status_webhooks_send_due(now=call.next_attempt_at) == {"queued": 1}
    call.refresh_from_db()
    assert call.attempts == 2
    assert status_webhooks_send_due(now=call.next_attempt_at) == {"dead": 1}

    call.refresh_from_db()
    assert (call.status, call.attempts, call.next_attempt_at) == ("dead", 3, None)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [call.message_id] * 3
    assert status_webhooks_send_due(now=later(10_000)) == {}


@pytest.mark.django_db
def test_a_retry_after_longer_than_the_backoff_is_honoured(
    receiver, delivery, subscribe, clean_redis
):
    receiver.answer(429, headers={"Retry-After": "3600"})
    subscribe(receiver.url(), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])

    before = timezone.now()
    status_webhooks_send_due()

    call = calls()[0]
    assert (call.status, call.last_status_code) == ("queued", 429)
    assert call.next_attempt_at >= before + timedelta(seconds=3600)


@pytest.mark.django_db
def test_a_400_is_dead_at_once(receiver, delivery, subscribe, clean_redis):
    receiver.answer(400, body=b'{"error": "no"}')
    subscribe(receiver.url(), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])

    assert status_webhooks_send_due() == {"dead": 1}

    call = calls()[0]
    assert (call.status, call.attempts, call.last_status_code) == ("dead", 1, 400)
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_a_redirect_is_dead_at_once_and_not_followed(receiver, delivery, subscribe, clean_redis):
    receiver.answer(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    subscribe(receiver.url(), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])

    assert status_webhooks_send_due() == {"dead": 1}
    assert calls()[0].last_error.startswith("redirect")
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_a_private_target_is_refused_at_send_time_and_dead(
    receiver, delivery, subscribe, settings, clean_redis
):
    subscribe(receiver.url(), ["delivery.sent"])  # registered while the dev setting was on
    status_events_record("delivery.sent", delivery_ids=[delivery.id])
    settings.CLARION = {**settings.CLARION, "WEBHOOK_ALLOW_PRIVATE": False}

    assert status_webhooks_send_due() == {"dead": 1}
    assert calls()[0].last_error.startswith("blocked_address")
    assert receiver.connections == 0


@pytest.mark.django_db
def test_a_call_whose_sweep_died_is_sent_when_its_lease_ends(
    receiver, delivery, subscribe, clean_redis
):
    subscribe(receiver.url(), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])
    claim = status_webhook_calls_claim(limit=10, now=timezone.now())  # ... and the sweep dies
    assert len(claim.calls) == 1

    assert status_webhooks_send_due(now=claim.lease - timedelta(seconds=1)) == {}
    assert status_webhooks_send_due(now=claim.lease) == {"sent": 1}
    assert calls()[0].attempts == 2


@pytest.mark.django_db
def test_a_call_that_kills_its_sweep_every_time_ends_dead(delivery, subscribe, clean_redis):
    subscribe("https://hooks.example.com/x", ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])
    now = timezone.now()
    for _ in range(3):  # DELIVERY_MAX_ATTEMPTS claims, none recorded
        now = status_webhook_calls_claim(limit=10, now=now).lease

    claim = status_webhook_calls_claim(limit=10, now=now)

    assert (claim.calls, claim.expired) == ([], 1)
    call = calls()[0]
    assert (call.status, call.attempts) == ("dead", 4)


@pytest.mark.django_db
def test_a_delivery_moving_forward_reaches_its_subscribers(
    receiver, delivery, subscribe, clean_redis
):
    endpoint = subscribe(receiver.url(), ["delivery.delivered"])
    Delivery.objects.filter(id=delivery.id).update(status="sent")

    assert deliveries_advance(status="delivered", delivery_ids=[delivery.id]) == [delivery.id]
    status_webhooks_send_due()

    payload = Webhook(endpoint["secret"]).verify(
        receiver.requests[0].body, receiver.requests[0].headers
    )
    assert (payload["type"], payload["data"]["status"]) == ("delivery.delivered", "delivered")


@pytest.mark.django_db(transaction=True)
def test_overlapping_sweeps_send_each_call_once(receiver, api_key, social_type, clean_redis):
    endpoint = WebhookEndpoint.objects.create(
        api_key=api_key[0],
        url=receiver.url(),
        event_types=["delivery.sent"],
        secret="whsec_" + "A" * 43,
    )
    subscribed_cache_clear()
    ids = [d.id for n in range(6) for d in deliveries_of(send_event(api_key, f"o{n}", NIGHT))]
    assert status_events_record("delivery.sent", delivery_ids=ids) == len(ids)
    receiver.delay = 0.05

    run_concurrently(lambda: status_webhooks_send_due(limit=5), [()] * 4)
    while status_webhooks_send_due():
        pass

    sent_ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert sorted(sent_ids) == sorted(c.message_id for c in calls())
    assert {c.status for c in StatusWebhookCall.objects.filter(endpoint=endpoint)} == {"sent"}


# --- the backoff -------------------------------------------------------------


def test_the_backoff_draws_below_an_exponential_ceiling():
    assert retry_delay(1, base=5, cap=3600, rng=lambda: 1.0) == 10
    assert retry_delay(3, base=5, cap=3600, rng=lambda: 1.0) == 40
    assert retry_delay(3, base=5, cap=3600, rng=lambda: 0.5) == 20
    assert retry_delay(3, base=5, cap=3600, rng=lambda: 0.0) == 0


def test_the_backoff_stops_at_its_cap_for_any_attempt():
    assert retry_delay(20, base=5, cap=3600, rng=lambda: 1.0) == 3600
    assert retry_delay(10**9, base=5, cap=3600, rng=lambda: 1.0) == 3600


def test_the_backoff_honours_a_longer_retry_after_only():
    assert retry_delay(1, base=5, cap=3600, retry_after=120, rng=lambda: 1.0) == 120
    assert retry_delay(5, base=5, cap=3600, retry_after=1, rng=lambda: 1.0) == 160


@pytest.mark.django_db
def test_beat_runs_the_sweep_task_every_configured_interval(
    receiver, delivery, subscribe, settings, clean_redis
):
    settings.CLARION = {**settings.CLARION, "STATUS_WEBHOOK_INTERVAL_SECONDS": 3.0}
    [schedule] = [s for s in schedules() if s.task == status_webhooks_send.name]
    assert (schedule.task, schedule.every_seconds) == ("clarion.delivery.status_webhooks_send", 3.0)

    subscribe(receiver.url(), ["delivery.sent"])
    status_events_record("delivery.sent", delivery_ids=[delivery.id])
    assert status_webhooks_send.apply().get() == {"sent": 1}
    assert len(receiver.requests) == 1
