"""`/api/v1/recipients/{id}/push-tokens` and the send service's two helpers
(`push_targets`, `push_tokens_prune`) on the real database."""

from __future__ import annotations

import secrets

import pytest
from rest_framework.test import APIClient

from notifications.models import PushToken, Recipient
from notifications.services.push_tokens import push_targets, push_tokens_prune

pytestmark = pytest.mark.django_db

FCM_TOKEN = "dGhpcy1pcy1hbi1mY20:APA91bH-example_token-1234567890"
APNS_TOKEN = "0f" * 32
URL = "/api/v1/recipients/{}/push-tokens"


def put(producer, external_id: str, body: object):
    return producer.put(URL.format(external_id), body, format="json")


def test_put_registers_a_token_and_creates_the_recipient(producer):
    response = put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})

    assert response.status_code == 201
    body = response.json()
    assert (body["token"], body["platform"]) == (FCM_TOKEN, "fcm")
    assert body["created_at"] and body["last_seen_at"]
    recipient = Recipient.objects.get(external_id="ana")
    assert list(recipient.push_tokens.values_list("platform", "token")) == [("fcm", FCM_TOKEN)]


def test_put_of_a_known_token_is_200_and_refreshes_it_without_a_second_row(producer):
    first = put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"}).json()

    again = put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})

    assert again.status_code == 200
    assert again.json()["created_at"] == first["created_at"]
    assert again.json()["last_seen_at"] >= first["last_seen_at"]
    assert PushToken.objects.count() == 1


def test_get_lists_the_recipients_tokens_newest_first(producer):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})
    put(producer, "ana", {"token": APNS_TOKEN, "platform": "apns"})
    put(producer, "bob", {"token": "other-device", "platform": "fcm"})

    response = producer.get(URL.format("ana"))

    assert response.status_code == 200
    assert [(t["platform"], t["token"]) for t in response.json()["results"]] == [
        ("apns", APNS_TOKEN),
        ("fcm", FCM_TOKEN),
    ]


def test_get_for_an_unknown_recipient_is_404(producer):
    assert producer.get(URL.format("ghost")).status_code == 404


def test_delete_with_a_body_removes_the_token(producer):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})

    response = producer.delete(URL.format("ana"), {"token": FCM_TOKEN}, format="json")

    assert response.status_code == 204
    assert PushToken.objects.count() == 0


def test_delete_with_a_query_parameter_removes_the_token(producer):
    put(producer, "ana", {"token": APNS_TOKEN, "platform": "apns"})

    assert producer.delete(URL.format("ana") + f"?token={APNS_TOKEN}").status_code == 204
    assert PushToken.objects.count() == 0


def test_delete_of_an_unknown_token_or_recipient_is_404(producer):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})

    assert producer.delete(URL.format("ana"), {"token": "nope"}, format="json").status_code == 404
    assert (
        producer.delete(URL.format("bob"), {"token": FCM_TOKEN}, format="json").status_code == 404
    )
    assert PushToken.objects.count() == 1


def test_delete_touches_only_that_recipients_token(producer):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})
    put(producer, "bob", {"token": FCM_TOKEN, "platform": "fcm"})

    producer.delete(URL.format("ana"), {"token": FCM_TOKEN}, format="json")

    assert list(PushToken.objects.values_list("recipient__external_id", flat=True)) == ["bob"]


def test_a_token_of_2048_random_characters_is_stored(producer):
    # The longest the unique index takes (random text does not compress).
    token = secrets.token_urlsafe(2048)[:2048]

    response = put(producer, "ana", {"token": token, "platform": "fcm"})

    assert response.status_code == 201
    assert PushToken.objects.get().token == token


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "fcm"}, "token"),
        ({"token": "", "platform": "fcm"}, "token"),
        ({"token": "x" * 2049, "platform": "fcm"}, "token"),
        ({"token": "tok\u00e9n", "platform": "fcm"}, "token"),
        ({"token": "abc\x01def", "platform": "fcm"}, "token"),
        ({"token": "abc def", "platform": "fcm"}, "token"),
        ({"token": 12345, "platform": "fcm"}, "token"),
        ({"token": "zz-not-hex", "platform": "apns"}, "token"),
        ({"token": FCM_TOKEN}, "platform"),
        ({"token": FCM_TOKEN, "platform": "gcm"}, "platform"),
        ({"token": FCM_TOKEN, "platform": ["fcm"]}, "platform"),
        ({"token": FCM_TOKEN, "platform": "fcm", "device": "iPhone"}, "device"),
        (["not", "an", "object"], "non_field_errors"),
    ],
)
def test_invalid_body_is_422_naming_the_field(producer, body, field):
    response = put(producer, "ana", body)

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]
    assert PushToken.objects.count() == 0


def test_a_nul_in_the_body_is_refused_by_the_json_parser(producer):
    response = producer.put(
        URL.format("ana"),
        data=b'{"token": "ab\\u0000cd", "platform": "fcm"}',
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_a_nul_in_the_delete_query_is_422_naming_the_token(producer):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})

    response = producer.delete(URL.format("ana") + "?token=ab%00cd")

    assert response.status_code == 422
    assert "token" in response.json()["errors"]


def test_empty_put_body_is_400(producer):
    response = producer.put(URL.format("ana"), content_type="application/json")

    assert response.status_code == 400


@pytest.mark.parametrize("hostile", ["a%00b", "x" * 200, "a%0Ab", "%20", "%09tab"])
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_hostile_recipient_ids_are_422_naming_the_id(producer, hostile, method):
    response = getattr(producer, method)(
        URL.format(hostile), {"token": FCM_TOKEN, "platform": "fcm"}, format="json"
    )

    assert response.status_code == 422
    assert "external_id" in response.json()["errors"]
    assert Recipient.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_the_endpoint_needs_a_producer_api_key(method):
    response = getattr(APIClient(), method)(
        URL.format("ana"), {"token": FCM_TOKEN, "platform": "fcm"}, format="json"
    )

    assert response.status_code == 401
    assert Recipient.objects.count() == 0


# --- the send service's helpers -------------------------------------------------


def test_push_targets_reads_every_recipients_tokens_in_one_query(
    producer, django_assert_num_queries
):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})
    put(producer, "ana", {"token": APNS_TOKEN, "platform": "apns"})
    put(producer, "bob", {"token": "bob-device", "platform": "fcm"})
    ids = dict(Recipient.objects.values_list("external_id", "id"))
    Recipient.objects.create(external_id="carol")

    with django_assert_num_queries(1):
        targets = push_targets([ids["ana"], ids["bob"], ids["ana"] + ids["bob"] + 1000])

    assert targets == {
        ids["ana"]: [("apns", APNS_TOKEN), ("fcm", FCM_TOKEN)],
        ids["bob"]: [("fcm", "bob-device")],
    }


def test_push_targets_of_no_recipients_makes_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert push_targets([]) == {}


def test_push_tokens_prune_removes_exactly_the_given_pairs_in_one_statement(
    producer, django_assert_num_queries
):
    put(producer, "ana", {"token": FCM_TOKEN, "platform": "fcm"})
    put(producer, "ana", {"token": APNS_TOKEN, "platform": "apns"})
    put(producer, "bob", {"token": FCM_TOKEN, "platform": "fcm"})
    ids = dict(Recipient.objects.values_list("external_id", "id"))

    with django_assert_num_queries(1):
        removed = push_tokens_prune([(ids["ana"], FCM_TOKEN), (ids["bob"], "never-registered")])

    assert removed == 1
    assert sorted(PushToken.objects.values_list("recipient__external_id", "token")) == [
        ("ana", APNS_TOKEN),
        ("bob", FCM_TOKEN),
    ]
    assert push_tokens_prune([]) == 0
