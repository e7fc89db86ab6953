"""Browser push subscriptions through the producer API
(`/api/v1/recipients/{id}/web-push-subscriptions`) and the recipient's own
inbox API (`/api/v1/inbox/web-push-subscriptions`, `/api/v1/inbox/web-push-key`),
and the send service's two helpers (`web_push_targets`, `web_push_prune`),
on the real database."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rest_framework.test import APIClient

from notifications.models import Recipient, WebPushSubscription
from notifications.services.web_push_subscriptions import (
    MAX_PER_RECIPIENT,
    web_push_prune,
    web_push_targets,
)
from tests.conftest import inbox_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/recipients/{}/web-push-subscriptions"
INBOX_URL = "/api/v1/inbox/web-push-subscriptions"
KEY_URL = "/api/v1/inbox/web-push-key"
PROBLEM = "application/problem+json"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def p256dh() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return b64url(
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )


def subscription(n: int = 1, **overrides) -> dict:
    """A subscription as `PushSubscription.toJSON()` gives it (FCM's endpoint form)."""
    body = {
        "endpoint": f"https://fcm.googleapis.com/fcm/send/device-{n}:APA91b",
        "expirationTime": None,
        "keys": {"p256dh": p256dh(), "auth": b64url(os.urandom(16))},
    }
    body.update(overrides)
    return body


def put(client, external_id: str, body: object):
    return client.put(URL.format(external_id), body, format="json")


# --- the producer API --------------------------------------------------------------


def test_put_registers_a_subscription_and_creates_the_recipient(producer):
    body = subscription(user_agent="Firefox/140")

    response = put(producer, "ana", body)

    assert response.status_code == 201
    assert response.json()["endpoint"] == body["endpoint"]
    assert response.json()["user_agent"] == "Firefox/140"
    assert "auth" not in response.json()
    row = WebPushSubscription.objects.get(recipient__external_id="ana")
    assert (row.endpoint, row.p256dh, row.auth) == (
        body["endpoint"],
        body["keys"]["p256dh"],
        body["keys"]["auth"],
    )


def test_put_of_a_known_endpoint_is_200_and_replaces_its_keys(producer):
    first = subscription()
    put(producer, "ana", first)
    again = subscription(keys={"p256dh": p256dh(), "auth": b64url(os.urandom(16))})

    response = put(producer, "ana", again)

    assert response.status_code == 200
    [row] = WebPushSubscription.objects.all()
    assert (row.p256dh, row.auth) == (again["keys"]["p256dh"], again["keys"]["auth"])


def test_padded_base64url_keys_are_stored_unpadded(producer):
    body = subscription()
    auth = base64.urlsafe_b64encode(os.urandom(16)).decode()  # ends in "=="
    body["keys"]["auth"] = auth

    assert put(producer, "ana", body).status_code == 201
    assert WebPushSubscription.objects.get().auth == auth.rstrip("=")


def test_get_lists_a_recipients_subscriptions_oldest_first(producer):
    put(producer, "ana", subscription(1))
    put(producer, "ana", subscription(2))

    listed = producer.get(URL.format("ana")).json()["results"]

    assert [s["endpoint"] for s in listed] == [
        subscription(1)["endpoint"],
        subscription(2)["endpoint"],
    ]


def test_get_of_an_unknown_recipient_is_404(producer):
    response = producer.get(URL.format("ghost"))

    assert response.status_code == 404 and response["Content-Type"] == PROBLEM


def test_delete_removes_only_the_named_endpoint(producer):
    put(producer, "ana", subscription(1))
    put(producer, "ana", subscription(2))

    response = producer.delete(
        URL.format("ana"), {"endpoint": subscription(1)["endpoint"]}, format="json"
    )

    assert response.status_code == 204
    assert list(WebPushSubscription.objects.values_list("endpoint", flat=True)) == [
        subscription(2)["endpoint"]
    ]


def test_delete_of_an_unknown_endpoint_or_recipient_is_204(producer):
    body = {"endpoint": "https://push.example.com/nothing"}

    assert producer.delete(URL.format("ana"), body, format="json").status_code == 204
    assert not Recipient.objects.filter(external_id="ana").exists()


def test_a_recipient_keeps_only_its_most_recent_subscriptions(producer):
    for n in range(MAX_PER_RECIPIENT + 1):
        assert put(producer, "ana", subscription(n)).status_code == 201

    endpoints = set(WebPushSubscription.objects.values_list("endpoint", flat=True))

    assert len(endpoints) == MAX_PER_RECIPIENT
    assert subscription(0)["endpoint"] not in endpoints


def test_a_long_user_agent_is_cut_to_255_characters(producer):
    assert put(producer, "ana", subscription(user_agent="M" * 1000)).status_code == 201
    assert WebPushSubscription.objects.get().user_agent == "M" * 255


def test_the_producer_api_needs_an_api_key():
    response = APIClient().put(URL.format("ana"), subscription(), format="json")

    assert response.status_code == 401 and response["Content-Type"] == PROBLEM


# --- hostile bodies ----------------------------------------------------------------

SHORT_AUTH = b64url(os.urandom(15))
NOT_ON_CURVE = b64url(b"\x04" + b"\x01" * 64)
COMPRESSED = b64url(b"\x02" + os.urandom(32))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "http://fcm.googleapis.com/fcm/send/x"}, "endpoint"),
        ({"endpoint": "https://127.0.0.1/push"}, "endpoint"),
        ({"endpoint": "https://[::1]/push"}, "endpoint"),
        ({"endpoint": "https://169.254.169.254/latest/meta-data"}, "endpoint"),
        ({"endpoint": "https://localhost/push"}, "endpoint"),
        ({"endpoint": "https://user:pw@push.example.com/x"}, "endpoint"),
        ({"endpoint": "https://push.example.com/x#frag"}, "endpoint"),
        ({"endpoint": "https://push.example.com:99999/x"}, "endpoint"),
        ({"endpoint": "https://push.example.com/" + "a" * 2048}, "endpoint"),
        ({"endpoint": "https://push.example.com/a b"}, "endpoint"),
        ({"endpoint": "javascript:alert(1)"}, "endpoint"),
        ({"endpoint": "file:///etc/passwd"}, "endpoint"),
        ({"endpoint": 42}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"keys": None}, "keys"),
        ({"keys": ["p256dh", "auth"]}, "keys"),
        ({"keys": {"auth": b64url(os.urandom(16))}}, "keys.p256dh"),
        ({"keys": {"p256dh": NOT_ON_CURVE, "auth": b64url(os.urandom(16))}}, "keys.p256dh"),
        ({"keys": {"p256dh": COMPRESSED, "auth": b64url(os.urandom(16))}}, "keys.p256dh"),
        ({"keys": {"p256dh": "not base64!", "auth": b64url(os.urandom(16))}}, "keys.p256dh"),
        ({"keys": {"p256dh": "A" * 100_000, "auth": b64url(os.urandom(16))}}, "keys.p256dh"),
        ({"keys": {"p256dh": p256dh(), "auth": SHORT_AUTH}}, "keys.auth"),
        ({"keys": {"p256dh": p256dh(), "auth": 16}}, "keys.auth"),
        ({"keys": {"p256dh": p256dh(), "auth": "a+b/" * 6}}, "keys.auth"),
        ({"user_agent": ["Firefox"]}, "user_agent"),
    ],
)
def test_an_invalid_subscription_is_422_naming_the_field(producer, change, field):
    response = put(producer, "ana", subscription(**change))

    assert response.status_code == 422, response.content
    assert response["Content-Type"] == PROBLEM
    assert field in response.json()["errors"]
    assert not WebPushSubscription.objects.exists()


@pytest.mark.parametrize("body", [[], "https://push.example.com", 7, {}])
def test_a_body_that_is_not_a_subscription_object_is_422(producer, body):
    response = put(producer, "ana", body)

    assert response.status_code == 422 and response["Content-Type"] == PROBLEM


def test_malformed_json_is_400_and_another_content_type_415(producer):
    bad_json = producer.generic(
        "PUT", URL.format("ana"), b'{"endpoint": ', content_type="application/json"
    )
    form = producer.generic("PUT", URL.format("ana"), b"endpoint=x", content_type="text/plain")

    assert (bad_json.status_code, form.status_code) == (400, 415)
    assert bad_json["Content-Type"] == form["Content-Type"] == PROBLEM


def test_a_nul_character_is_400_never_a_500(producer):
    raw = json.dumps(subscription(user_agent="a\u0000b")).encode()

    response = producer.generic("PUT", URL.format("ana"), raw, content_type="application/json")

    assert response.status_code == 400 and response["Content-Type"] == PROBLEM


def test_a_hostile_recipient_id_in_the_path_is_422(producer):
    response = put(producer, "x" * 200, subscription())

    assert response.status_code == 422 and "external_id" in response.json()["errors"]


@pytest.mark.parametrize(
    "body", [{}, {"endpoint": ""}, {"endpoint": 3}, [], {"endpoint": "x" * 3000}]
)
def test_a_delete_without_a_usable_endpoint_is_422(producer, body):
    response = producer.delete(URL.format("ana"), body, format="json")

    assert response.status_code == 422 and "endpoint" in response.json()["errors"]


def test_http_and_loopback_endpoints_are_allowed_with_the_development_switch(producer, settings):
    settings.CLARION = {**settings.CLARION, "WEBHOOK_ALLOW_PRIVATE": True}

    response = put(producer, "ana", subscription(endpoint="http://127.0.0.1:9100/push/a"))

    assert response.status_code == 201


# --- the recipient's own browser ---------------------------------------------------


def test_the_bell_registers_its_browser_with_the_recipient_token(producer):
    Recipient.objects.create(external_id="ana")
    body = subscription(user_agent="Chrome/140")

    response = inbox_client(producer, "ana").put(INBOX_URL, body, format="json")

    assert response.status_code == 201
    assert WebPushSubscription.objects.get().recipient.external_id == "ana"


def test_the_bell_lists_and_deletes_only_its_own_recipients_subscriptions(producer):
    put(producer, "bob", subscription(1))
    put(producer, "ana", subscription(2))
    ana = inbox_client(producer, "ana")

    listed = ana.get(INBOX_URL).json()["results"]
    # Bob's endpoint named by Ana's browser: nothing of Bob's goes.
    deleted = ana.delete(INBOX_URL, {"endpoint": subscription(1)["endpoint"]}, format="json")

    assert [s["endpoint"] for s in listed] == [subscription(2)["endpoint"]]
    assert deleted.status_code == 204
    assert WebPushSubscription.objects.filter(recipient__external_id="bob").count() == 1
    ana.delete(INBOX_URL, {"endpoint": subscription(2)["endpoint"]}, format="json")
    assert not WebPushSubscription.objects.filter(recipient__external_id="ana").exists()


def test_the_inbox_side_needs_a_recipient_token(producer):
    anonymous = APIClient().put(INBOX_URL, subscription(), format="json")
    with_api_key = producer.put(INBOX_URL, subscription(), format="json")
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Recipient not-a-token")

    assert anonymous.status_code == 401
    assert with_api_key.status_code == 401  # an API key is not a recipient
    assert forged.put(INBOX_URL, subscription(), format="json").status_code == 401
    assert not WebPushSubscription.objects.exists()


def test_the_inbox_side_validates_like_the_producer_side(producer):
    response = inbox_client(producer, "ana").put(
        INBOX_URL, subscription(endpoint="https://10.0.0.5/push"), format="json"
    )

    assert response.status_code == 422 and "endpoint" in response.json()["errors"]


def test_the_vapid_public_key_is_served_to_the_bell(producer, settings):
    settings.CLARION = {**settings.CLARION, "VAPID_PUBLIC_KEY": "BPublicKey"}

    response = inbox_client(producer, "ana").get(KEY_URL)

    assert response.status_code == 200 and response.json() == {"public_key": "BPublicKey"}


def test_without_a_vapid_key_the_key_endpoint_is_404_problem_json(producer, settings):
    settings.CLARION = {**settings.CLARION, "VAPID_PUBLIC_KEY": ""}

    response = inbox_client(producer, "ana").get(KEY_URL)

    assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert "VAPID" in response.json()["detail"]


# --- the send service's helpers ----------------------------------------------------


def test_web_push_targets_reads_every_recipients_subscriptions_in_one_query(
    producer, django_assert_num_queries
):
    put(producer, "ana", subscription(1))
    put(producer, "ana", subscription(2))
    put(producer, "bob", subscription(3))
    Recipient.objects.create(external_id="cy")
    ids = dict(Recipient.objects.values_list("external_id", "id"))

    with django_assert_num_queries(1):
        targets = web_push_targets([ids["ana"], ids["bob"], ids["cy"]])

    assert set(targets) == {ids["ana"], ids["bob"]}
    [first, second] = [json.loads(t) for t in targets[ids["ana"]]]
    row = WebPushSubscription.objects.get(endpoint=first["endpoint"])
    assert first == {"endpoint": row.endpoint, "keys": {"p256dh": row.p256dh, "auth": row.auth}}
    assert second["endpoint"] == subscription(2)["endpoint"]


def test_web_push_prune_removes_exactly_the_named_pairs_in_one_statement(
    producer, django_assert_num_queries
):
    shared = subscription(1)
    put(producer, "ana", shared)
    put(producer, "bob", shared)  # one browser, two recipients (a shared computer)
    put(producer, "ana", subscription(2))
    ana = Recipient.objects.get(external_id="ana").id

    with django_assert_num_queries(1):
        removed = web_push_prune([(ana, shared["endpoint"]), (ana, "https://push.example.com/x")])

    assert removed == 1
    assert WebPushSubscription.objects.filter(recipient__external_id="bob").count() == 1
    assert WebPushSubscription.objects.filter(recipient_id=ana).count() == 1
    assert web_push_prune([]) == 0
