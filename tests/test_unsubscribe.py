"""One-click unsubscribe (RFC 8058): the signed link, the confirmation page,
the POST that turns a category's email off, and tokens that are not ours."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.test import Client

from delivery.links import (
    LinkInvalid,
    token_make,
    unsubscribe_read,
    unsubscribe_token,
    unsubscribe_url,
)
from notifications.models import Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.types import notification_type_put
from preferences.services import preferences_get, preferences_put

pytestmark = pytest.mark.django_db

ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


def email_type(key: str, category: str) -> None:
    notification_type_put(
        key=key,
        body={
            "category": category,
            "channels": ["in_app", "email"],
            "templates": {
                "in_app": {"en": {"title": "Hi"}},
                "email": {"en": {"subject": "Hi", "text": "Hello"}},
            },
        },
    )


@pytest.fixture
def types():
    notification_type_cache_clear()
    email_type("comment.created", "social")
    email_type("like.created", "social")
    email_type("invoice.paid", "billing")


@pytest.fixture
def ana(types) -> Recipient:
    return Recipient.objects.create(external_id="ana", email="ana@example.org")


@pytest.fixture
def client() -> Client:
    # As mail clients post: no session, no CSRF cookie, and checks enforced.
    return Client(enforce_csrf_checks=True)


def path_of(url: str) -> str:
    return urlsplit(url).path


def test_the_link_is_absolute_under_public_url_and_reads_back(settings, ana):
    settings.CLARION = {**settings.CLARION, "PUBLIC_URL": "https://notify.example.com"}

    url = unsubscribe_url(17, ana.id, "social")

    assert url.startswith("https://notify.example.com/hooks/unsubscribe/")
    link = unsubscribe_read(url.rsplit("/", 1)[1])
    assert (link.delivery_id, link.recipient_id, link.category, link.channel) == (
        17,
        ana.id,
        "social",
        "email",
    )


def test_get_shows_a_confirmation_form_and_changes_nothing(client, ana):
    response = client.get(path_of(unsubscribe_url(1, ana.id, "social")))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'method="post"' in page and "social" in page
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    assert preferences_get(recipient_id=ana.id)["categories"] == {}


def test_one_click_post_turns_the_category_off_for_email(client, ana):
    response = client.post(
        path_of(unsubscribe_url(1, ana.id, "social")), ONE_CLICK, content_type=FORM
    )

    assert response.status_code == 200
    assert "unsubscribed" in response.content.decode()
    assert preferences_get(recipient_id=ana.id)["categories"] == {"social": {"email": False}}


def test_the_page_form_post_unsubscribes_too(client, ana):
    response = client.post(
        path_of(unsubscribe_url(1, ana.id, "social")), {"List-Unsubscribe": "One-Click"}
    )

    assert response.status_code == 200
    assert preferences_get(recipient_id=ana.id)["categories"]["social"] == {"email": False}


def test_unsubscribing_keeps_every_other_preference(client, ana):
    preferences_put(
        recipient_id=ana.id,
        body={
            "channels": {"sms": False},
            "categories": {"social": {"in_app": True}, "billing": {"email": True}},
            "types": {"invoice.paid": {"email": True}},
            "quiet_hours": {"start": "22:00", "end": "07:00"},
            "daily_caps": {"email": 5},
        },
    )

    client.post(path_of(unsubscribe_url(1, ana.id, "social")), ONE_CLICK, content_type=FORM)

    assert preferences_get(recipient_id=ana.id) == {
        "channels": {"sms": False},
        "categories": {"social": {"in_app": True, "email": False}, "billing": {"email": True}},
        "types": {"invoice.paid": {"email": True}},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "daily_caps": {"email": 5},
    }


def test_a_type_of_the_category_turned_on_is_turned_off_too(client, ana):
    preferences_put(
        recipient_id=ana.id,
        body={
            "types": {
                "comment.created": {"email": True, "in_app": True},
                "invoice.paid": {"email": True},
            },
        },
    )

    client.post(path_of(unsubscribe_url(1, ana.id, "social")), ONE_CLICK, content_type=FORM)

    types = preferences_get(recipient_id=ana.id)["types"]
    assert types == {
        "comment.created": {"email": False, "in_app": True},
        "invoice.paid": {"email": True},
    }


def test_unsubscribing_twice_answers_200_both_times(client, ana):
    path = path_of(unsubscribe_url(1, ana.id, "social"))

    assert client.post(path, ONE_CLICK, content_type=FORM).status_code == 200
    assert client.post(path, ONE_CLICK, content_type=FORM).status_code == 200
    assert preferences_get(recipient_id=ana.id)["categories"] == {"social": {"email": False}}


def test_a_link_of_an_erased_recipient_answers_200_and_writes_nothing(client, ana):
    path = path_of(unsubscribe_url(1, ana.id, "social"))
    recipient_id = ana.id
    ana.delete()

    assert client.post(path, ONE_CLICK, content_type=FORM).status_code == 200
    assert preferences_get(recipient_id=recipient_id)["categories"] == {}


def test_an_expired_link_is_410_and_changes_nothing(client, settings, ana):
    path = path_of(unsubscribe_url(1, ana.id, "social"))
    settings.CLARION = {**settings.CLARION, "UNSUBSCRIBE_TOKEN_MAX_AGE_SECONDS": -1}

    assert client.get(path).status_code == 410
    response = client.post(path, ONE_CLICK, content_type=FORM)
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    assert preferences_get(recipient_id=ana.id)["categories"] == {}


def test_a_tampered_link_is_400_and_changes_nothing(client, ana):
    token = unsubscribe_token(1, ana.id, "social")
    payload, rest = token.split(":", 1)
    forged = ("B" if payload[0] != "B" else "C") + payload[1:] + ":" + rest

    for token_variant in (forged, token[:-1], token + "x"):
        response = client.post(f"/hooks/unsubscribe/{token_variant}", ONE_CLICK, content_type=FORM)
        assert response.status_code == 400
    assert preferences_get(recipient_id=ana.id)["categories"] == {}


def test_a_token_made_for_another_purpose_is_refused(client, ana):
    click = token_make("click", {"d": 1, "r": ana.id, "c": "social", "ch": "email"})

    with pytest.raises(LinkInvalid):
        unsubscribe_read(click)
    assert (
        client.post(f"/hooks/unsubscribe/{click}", ONE_CLICK, content_type=FORM).status_code == 400
    )


def test_a_signed_token_with_the_wrong_shape_is_refused(ana):
    for payload in (
        {"d": 1, "r": "1", "c": "social", "ch": "email"},
        {"d": 1, "r": ana.id, "c": "", "ch": "email"},
        {"d": 1, "r": ana.id, "c": "social", "ch": "pigeon"},
        {"d": True, "r": ana.id, "c": "social", "ch": "email"},
        [1, 2, 3],
    ):
        with pytest.raises(LinkInvalid):
            unsubscribe_read(token_make("unsubscribe", payload))


@pytest.mark.parametrize(
    "token",
    [
        "%00",
        "abc%00def:ghi:jkl",
        "x" * 100_000,
        "%ff%fe%fd",
        "a:b:c",
        "::::",
        "../../etc/passwd",
        "a/b/c",
        "%E2%80%AEevil",
        "eyJ9:1:2",
    ],
)
def test_hostile_tokens_get_a_400_page_never_a_500(client, ana, token):
    for response in (
        client.get(f"/hooks/unsubscribe/{token}"),
        client.post(f"/hooks/unsubscribe/{token}", ONE_CLICK, content_type=FORM),
    ):
        assert response.status_code == 400
        assert "not valid" in response.content.decode()
    assert preferences_get(recipient_id=ana.id)["categories"] == {}


def test_other_methods_are_405(client, ana):
    response = client.put(path_of(unsubscribe_url(1, ana.id, "social")))

    assert response.status_code == 405
