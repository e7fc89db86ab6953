"""Email events (anymail's normalized form) move deliveries forward, from the
signed `POST /hooks/email/events` and from anymail's tracking signal; bounces
and complaints turn the address's email off in the recipient's preferences."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.test import Client
from standardwebhooks.webhooks import Webhook

from delivery.hooks.signing import hook_secret
from notifications.models import Delivery, Recipient
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from preferences.services import preferences_get, preferences_put

pytestmark = pytest.mark.django_db

URL = "/hooks/email/events"
OTHER_SECRET = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"


@pytest.fixture
def client() -> Client:
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def sent(api_key, comment_type, clean_redis):
    """sent(external_id, provider_message_id="") -> a sent email Delivery."""

    def make(external_id: str, provider_message_id: str = "") -> Delivery:
        address = f"{external_id}@example.org"
        Recipient.objects.update_or_create(external_id=external_id, defaults={"email": address})
        body = {"type": "comment.created", "recipients": [external_id], "data": {"comment": "Hi"}}
        event_id = event_accept(api_key_id=api_key[0].id, body=body).id
        event_fan_out_page(event_id=event_id, page=0)
        delivery = Delivery.objects.get(notification__event_id=event_id, channel="email")
        Delivery.objects.filter(id=delivery.id).update(
            status="sent", address=address, provider_message_id=provider_message_id
        )
        return delivery

    return make


def signed_post(
    client: Client,
    events,
    *,
    secret: str | None = None,
    when: datetime | None = None,
    headers: dict | None = None,
):
    body = events if isinstance(events, str) else json.dumps(events)
    when = when or datetime.now(UTC)
    signature = Webhook(secret or hook_secret()).sign("msg_1", when, body)
    sent_headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
    if headers is not None:
        sent_headers = headers
    return client.post(URL, body, content_type="application/json", headers=sent_headers)


def status_of(delivery: Delivery) -> tuple[str, str]:
    delivery.refresh_from_db()
    return delivery.status, delivery.reason


def event(event_type: str, **fields) -> dict:
    return {"event_type": event_type, "timestamp": "2026-07-01T10:00:00Z", **fields}


def test_a_signed_delivered_event_moves_its_delivery_to_delivered(client, sent):
    delivery = sent("ana")

    response = signed_post(
        client,
        [
            event(
                "delivered",
                recipient="ana@example.org",
                metadata={"clarion_delivery": str(delivery.id)},
            ),
        ],
    )

    assert response.status_code == 200
    assert response.json() == {
        "received": 1,
        "ignored": 0,
        "matched": 1,
        "advanced": 1,
        "suppressed": 0,
    }
    assert status_of(delivery) == ("delivered", "")


def test_an_event_finds_its_delivery_by_our_message_id(client, sent):
    delivery = sent("ana")

    signed_post(client, [event("opened", message_id=f"<clarion-delivery-{delivery.id}@x.com>")])

    assert status_of(delivery) == ("opened", "")


def test_an_event_finds_its_delivery_by_the_providers_message_id(client, sent):
    delivery = sent("ana", provider_message_id="esp-7f3a")
    other = sent("bob", provider_message_id="esp-0000")

    signed_post(client, [event("clicked", message_id="esp-7f3a")])

    assert status_of(delivery) == ("clicked", "")
    assert status_of(other) == ("sent", "")


def test_events_of_one_message_in_one_call_end_at_the_furthest_state(client, sent):
    delivery = sent("ana")
    ours = {"clarion_delivery": str(delivery.id)}

    signed_post(
        client,
        [
            event("clicked", metadata=ours),
            event("delivered", metadata=ours),
            event("opened", metadata=ours),
        ],
    )

    assert status_of(delivery) == ("clicked", "")


def test_an_unsigned_call_is_401_and_changes_nothing(client, sent):
    delivery = sent("ana")
    body = json.dumps([event("delivered", metadata={"clarion_delivery": str(delivery.id)})])

    response = client.post(URL, body, content_type="application/json")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert status_of(delivery) == ("sent", "")


def test_a_signature_with_another_secret_is_401(client, sent):
    delivery = sent("ana")

    response = signed_post(
        client,
        [event("bounced", metadata={"clarion_delivery": str(delivery.id)})],
        secret=OTHER_SECRET,
    )

    assert response.status_code == 401
    assert status_of(delivery) == ("sent", "")
    assert preferences_get(recipient_id=delivery.notification.recipient_id)["channels"] == {}


def test_a_stale_signature_is_401(client, sent):
    delivery = sent("ana")

    response = signed_post(
        client,
        [event("delivered", metadata={"clarion_delivery": str(delivery.id)})],
        when=datetime.now(UTC) - timedelta(minutes=10),
    )

    assert response.status_code == 401
    assert status_of(delivery) == ("sent", "")


def test_a_signature_for_another_body_is_401(client, sent):
    delivery = sent("ana")
    now = datetime.now(UTC)
    signature = Webhook(hook_secret()).sign("msg_1", now, "[]")
    body = json.dumps([event("delivered", metadata={"clarion_delivery": str(delivery.id)})])

    response = client.post(
        URL,
        body,
        content_type="application/json",
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
    )

    assert response.status_code == 401
    assert status_of(delivery) == ("sent", "")


@pytest.mark.parametrize("signature", ["garbage", "v1,", "v1,!!!notbase64", "v2,abc", ",,,", ""])
def test_malformed_signature_headers_are_401(client, signature):
    now = str(int(datetime.now(UTC).timestamp()))
    response = signed_post(
        client,
        [],
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": now,
            "webhook-signature": signature,
        },
    )

    assert response.status_code == 401


def test_a_signed_body_that_is_not_a_list_of_events_is_400(client):
    assert signed_post(client, "not json").status_code == 400
    assert signed_post(client, "42").status_code == 400


def test_items_that_are_not_events_are_ignored(client, sent):
    delivery = sent("ana")

    response = signed_post(
        client,
        [
            "text",
            {"no": "type"},
            event("deferred", metadata={"clarion_delivery": "1"}),
            event("delivered", metadata={"clarion_delivery": str(delivery.id)}),
            event("delivered", metadata={"clarion_delivery": "99999999999999999999999"}),
        ],
    )

    assert response.status_code == 200
    assert response.json()["ignored"] == 2
    assert response.json()["matched"] == 1
    assert status_of(delivery) == ("delivered", "")


def test_get_is_405(client):
    assert client.get(URL).status_code == 405


def test_a_bounce_fails_the_delivery_and_turns_email_off_for_the_recipient(client, sent):
    delivery = sent("ana")
    recipient_id = delivery.notification.recipient_id
    preferences_put(
        recipient_id=recipient_id,
        body={
            "channels": {"sms": False},
            "categories": {"social": {"email": True, "in_app": True}},
            "types": {"comment.created": {"email": True}},
            "daily_caps": {"sms": 2},
        },
    )

    response = signed_post(
        client,
        [
            event(
                "bounced",
                recipient="Ana@Example.org",
                metadata={"clarion_delivery": str(delivery.id)},
            ),
        ],
    )

    assert response.json()["suppressed"] == 1
    assert status_of(delivery) == ("failed", "bounced")
    assert preferences_get(recipient_id=recipient_id) == {
        "channels": {"sms": False, "email": False},
        "categories": {"social": {"email": False, "in_app": True}},
        "types": {"comment.created": {"email": False}},
        "quiet_hours": None,
        "daily_caps": {"sms": 2},
    }


def test_a_complaint_fails_the_delivery_and_turns_email_off(client, sent):
    delivery = sent("ana", provider_message_id="esp-1")

    signed_post(client, [event("complained", message_id="esp-1", recipient="ana@example.org")])

    assert status_of(delivery) == ("failed", "complained")
    assert preferences_get(recipient_id=delivery.notification.recipient_id)["channels"] == {
        "email": False
    }


def test_a_bounce_of_an_address_the_recipient_no_longer_has_suppresses_nothing(client, sent):
    delivery = sent("ana")
    Recipient.objects.filter(external_id="ana").update(email="ana@new.example.org")

    signed_post(
        client,
        [
            event(
                "bounced",
                recipient="ana@example.org",
                metadata={"clarion_delivery": str(delivery.id)},
            )
        ],
    )

    assert status_of(delivery) == ("failed", "bounced")
    assert preferences_get(recipient_id=delivery.notification.recipient_id)["channels"] == {}


def test_a_rejection_suppresses_only_for_a_bounce_or_complaint_reason(client, sent):
    blocked, policy = sent("ana"), sent("bob")

    signed_post(
        client,
        [
            event(
                "rejected", reject_reason="bounced", metadata={"clarion_delivery": str(blocked.id)}
            ),
            event("rejected", reject_reason="other", metadata={"clarion_delivery": str(policy.id)}),
        ],
    )

    assert status_of(blocked) == ("failed", "rejected")
    assert status_of(policy) == ("failed", "rejected")
    assert preferences_get(recipient_id=blocked.notification.recipient_id)["channels"] == {
        "email": False
    }
    assert preferences_get(recipient_id=policy.notification.recipient_id)["channels"] == {}


def test_the_anymail_tracking_signal_applies_events(sent):
    delivery = sent("ana", provider_message_id="pm-42")
    other = sent("bob")

    tracking.send(
        sender=object,
        esp_name="Postmark",
        event=AnymailTrackingEvent(
            event_type="delivered",
            message_id="pm-42",
            recipient="ana@example.org",
            timestamp=datetime.now(UTC),
        ),
    )
    tracking.send(
        sender=object,
        esp_name="Postmark",
        event=AnymailTrackingEvent(
            event_type="bounced",
            message_id="unknown-to-us",
            recipient="bob@example.org",
            metadata={"clarion_delivery": str(other.id)},
            timestamp=datetime.now(UTC),
        ),
    )

    assert status_of(delivery) == ("delivered", "")
    assert status_of(other) == ("failed", "bounced")
    assert preferences_get(recipient_id=other.notification.recipient_id)["channels"] == {
        "email": False
    }


def test_the_hook_secret_is_derived_and_never_the_outbound_one(settings):
    settings.CLARION = {
        **settings.CLARION,
        "HOOK_SIGNING_SECRET": "",
        "WEBHOOK_SIGNING_SECRET": OTHER_SECRET,
    }
    derived = hook_secret()
    assert derived.startswith("whsec_") and derived != OTHER_SECRET
    Webhook(derived)  # a valid Standard Webhooks secret
    # Whoever holds the outbound secret cannot compute it: it does not depend on it.
    settings.CLARION = {**settings.CLARION, "WEBHOOK_SIGNING_SECRET": ""}
    assert hook_secret() == derived

    settings.CLARION = {**settings.CLARION, "HOOK_SIGNING_SECRET": OTHER_SECRET}
    assert hook_secret() == OTHER_SECRET
