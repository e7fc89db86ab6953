"""The webhook channel: signed JSON POSTs to a recipient's webhook URL, read
into outcomes, over one pooled keep-alive client (delivery/providers/webhook.py).

The receiver is a real HTTP server on 127.0.0.1 (tests/fakes/webhook_receiver.py),
so WEBHOOK_ALLOW_PRIVATE is on here; tests/test_ssrf.py covers the guard."""

from __future__ import annotations

import base64
import json
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from standardwebhooks import Webhook

from delivery.providers.base import FAILED, RETRY, SENT, Message
from delivery.providers.http import RESPONSE_KEEP_CHARS
from delivery.providers.registry import ProviderUrl, providers_for
from delivery.providers.signing_secret import webhook_signing_secret
from delivery.providers.webhook import SEND_THREADS, WebhookProvider
from delivery.services.dispatch import deliveries_claim_due
from delivery.services.send import deliveries_send
from notifications.models import Delivery, Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from tests.fakes.webhook_receiver import Answer, WebhookReceiver
from tests.test_dispatch import NIGHT

CONFIGURED_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture(autouse=True)
def allow_private(settings):
    settings.CLARION = {
        **settings.CLARION,
        "WEBHOOK_ALLOW_PRIVATE": True,
        "WEBHOOK_SIGNING_SECRET": "",
        "PROVIDER_TIMEOUT_SECONDS": 5.0,
    }


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


def message(url: str, payload: object = '{"text": "hi"}', delivery_id: int = 7) -> Message:
    return Message(
        delivery_id=delivery_id, channel="webhook", address=url, content={"payload": payload}
    )


def test_a_message_arrives_as_its_payload_signed_and_verifiable(receiver):
    outcome = WebhookProvider().send([message(receiver.url(), '{"text": "hi", "n": 1}')])[0]

    assert (outcome.status, outcome.status_code) == (SENT, 200)
    [request] = receiver.requests
    assert request.body == b'{"text": "hi", "n": 1}'
    assert request.headers["content-type"] == "application/json"
    assert Webhook(webhook_signing_secret()).verify(request.body, request.headers) == {
        "text": "hi",
        "n": 1,
    }


def test_a_message_carries_its_delivery_as_webhook_id_and_idempotency_key(receiver):
    WebhookProvider().send([message(receiver.url(), delivery_id=41)])
    headers = receiver.requests[0].headers
    assert headers["webhook-id"] == headers["idempotency-key"] == "clarion-delivery-41"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")


def test_a_retry_carries_the_same_webhook_id_and_verifies_again(receiver):
    provider = WebhookProvider()
    provider.send([message(receiver.url(), delivery_id=5)])
    provider.send([message(receiver.url(), delivery_id=5)])
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["clarion-delivery-5"] * 2
    assert len(receiver.verify(webhook_signing_secret())) == 2


def test_a_payload_that_is_not_json_is_wrapped(receiver):
    WebhookProvider().send([message(receiver.url(), "plain text, not JSON")])
    assert json.loads(receiver.requests[0].body) == {"payload": "plain text, not JSON"}
    receiver.verify(webhook_signing_secret())


def test_the_configured_signing_secret_signs(receiver, settings):
    settings.CLARION = {**settings.CLARION, "WEBHOOK_SIGNING_SECRET": CONFIGURED_SECRET}
    WebhookProvider().send([message(receiver.url())])
    assert Webhook(CONFIGURED_SECRET).verify(
        receiver.requests[0].body, receiver.requests[0].headers
    )


@pytest.mark.parametrize("bad", ["whsec_not base64!", "whsec_" + "QUJD", "short"])
def test_a_malformed_signing_secret_stops_the_provider_at_start(settings, bad):
    settings.CLARION = {**settings.CLARION, "WEBHOOK_SIGNING_SECRET": bad}
    with pytest.raises(ImproperlyConfigured, match="WEBHOOK_SIGNING_SECRET"):
        WebhookProvider.from_url(ProviderUrl.parse("webhook", "webhook://"))


def test_a_payload_that_cannot_be_encoded_fails_that_message_only(receiver):
    outcomes = WebhookProvider().send(
        [
            message(receiver.url(), "\ud800 lone", delivery_id=1),
            message(receiver.url(), delivery_id=2),
        ]
    )
    assert [(o.delivery_id, o.status, o.reason) for o in outcomes] == [
        (1, FAILED, "bad_payload"),
        (2, SENT, ""),
    ]


def test_the_derived_signing_secret_is_stable_and_a_valid_standard_webhooks_secret():
    secret = webhook_signing_secret()
    assert secret == webhook_signing_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32


def test_calls_reuse_one_kept_alive_connection(receiver):
    provider = WebhookProvider()
    for n in range(5):
        assert provider.send([message(receiver.url(), delivery_id=n)])[0].status == SENT
    assert (len(receiver.requests), receiver.connections) == (5, 1)


def test_a_batch_is_sent_concurrently_on_a_few_connections(receiver):
    receiver.delay = 0.3
    batch = [message(receiver.url(), delivery_id=n) for n in range(2 * SEND_THREADS)]

    started = time.monotonic()
    outcomes = WebhookProvider().send(batch)
    elapsed = time.monotonic() - started

    assert [o.delivery_id for o in outcomes] == list(range(2 * SEND_THREADS))
    assert {o.status for o in outcomes} == {SENT}
    assert receiver.most_in_flight > 1
    assert receiver.connections <= SEND_THREADS
    assert elapsed < 2 * SEND_THREADS * 0.3 / 2  # far from one at a time


def test_a_503_is_retried_with_its_retry_after(receiver):
    receiver.answer(503, headers={"Retry-After": "7"})
    outcome = WebhookProvider().send([message(receiver.url())])[0]
    assert (outcome.status, outcome.reason, outcome.retry_after) == (RETRY, "http_503", 7.0)


def test_a_429_is_retried(receiver):
    receiver.answer(429)
    assert WebhookProvider().send([message(receiver.url())])[0].status == RETRY


def test_a_400_fails_for_good(receiver):
    receiver.answer(400, body=b'{"error": "bad"}')
    outcome = WebhookProvider().send([message(receiver.url())])[0]
    assert (outcome.status, outcome.reason, outcome.response) == (
        FAILED,
        "http_400",
        '{"error": "bad"}',
    )


def test_a_slow_receiver_is_a_retryable_timeout(receiver):
    receiver.delay = 1.0
    provider = WebhookProvider.from_url(ProviderUrl.parse("webhook", "webhook://?timeout=0.2"))
    outcome = provider.send([message(receiver.url())])[0]
    assert (outcome.status, outcome.reason) == (RETRY, "timeout")


def test_an_unreachable_receiver_is_a_retryable_connection_error(receiver):
    url = receiver.url()
    receiver.stop()
    outcome = WebhookProvider().send([message(url)])[0]
    assert (outcome.status, outcome.reason) == (RETRY, "connection_error")


def test_a_huge_answer_is_read_only_in_part(receiver):
    receiver.answer(200, body=b"x" * (4 * 1024 * 1024))
    outcome = WebhookProvider().send([message(receiver.url())])[0]
    assert outcome.status == SENT
    assert len(outcome.response) <= RESPONSE_KEEP_CHARS


def test_one_bad_message_does_not_fail_the_others(receiver):
    receiver.answer_next([Answer(500)])
    outcomes = WebhookProvider().send(
        [message(receiver.url(), delivery_id=1), message("ftp://x/", delivery_id=2)]
    )
    assert sorted((o.delivery_id, o.status) for o in outcomes) == [(1, RETRY), (2, FAILED)]


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "1000"])
def test_a_bad_timeout_in_the_provider_url_is_refused_at_start(raw):
    with pytest.raises(ImproperlyConfigured, match="timeout"):
        WebhookProvider.from_url(ProviderUrl.parse("webhook", f"webhook://?timeout={raw}"))


def test_the_webhook_scheme_builds_the_webhook_provider(settings):
    settings.CLARION = {**settings.CLARION, "PROVIDERS": [("webhook", "webhook://?timeout=3")]}
    [configured] = providers_for("webhook")
    assert isinstance(configured.provider, WebhookProvider)
    assert configured.name == "webhook:webhook"


# --- through the send service ------------------------------------------------

HOOK_TYPE = {
    "category": "ops",
    "channels": ["in_app", "webhook"],
    "templates": {
        "in_app": {"en": {"title": "Deploy {{ version }}"}},
        "webhook": {"en": {"payload": '{"text": "Deployed {{ version }}"}'}},
    },
}


@pytest.mark.django_db
def test_a_webhook_delivery_is_sent_to_the_recipients_webhook_url(
    api_key, receiver, settings, clean_redis
):
    settings.CLARION = {**settings.CLARION, "PROVIDERS": [("webhook", "webhook://")]}
    notification_type_cache_clear()
    notification_type_put(key="deploy.done", body=HOOK_TYPE)
    Recipient.objects.create(external_id="ops-room", data={"webhook_url": receiver.url("/chat")})
    event_id = event_accept(
        api_key_id=api_key[0].id,
        body={"type": "deploy.done", "recipients": ["ops-room"], "data": {"version": "1.2"}},
    ).id
    event_fan_out_page(event_id=event_id, page=0, now=NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    delivery = Delivery.objects.get(notification__event_id=event_id, channel="webhook")
    assert delivery.status == "sent"
    [request] = receiver.requests
    assert request.path == "/chat"
    assert request.headers["webhook-id"] == f"clarion-delivery-{delivery.id}"
    assert Webhook(webhook_signing_secret()).verify(request.body, request.headers) == {
        "text": "Deployed 1.2"
    }


@pytest.mark.parametrize(
    ("url", "destination"),
    [
        ("https://Hooks.Example.com/a?b=1", "hooks.example.com:443"),
        ("http://hooks.example.com/a", "hooks.example.com:80"),
        ("https://hooks.example.com:8443/", "hooks.example.com:8443"),
        ("https://[2001:db8::1]:9000/x", "2001:db8::1:9000"),
        ("https://hooks.example.com:99999/", ""),
        ("not a url", ""),
        ("", ""),
    ],
)
def test_the_breaker_destination_of_a_webhook_is_its_host_and_port(url, destination):
    message = Message(delivery_id=1, channel="webhook", address=url, content={})
    assert WebhookProvider.destination_of(message) == destination
