"""Every rule of docs/preferences.md, through the fan-out that applies it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Delivery, Notification, Recipient
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from preferences.services import preferences_put
from tests.conftest import inbox_client
from tests.helpers import FIRST_PAGE_BOOKKEEPING, subscribe_many

pytestmark = pytest.mark.django_db

TYPE = {
    "category": "social",
    "channels": ["in_app", "email", "sms"],
    "required_channels": [],
    "templates": {
        "in_app": {"en": {"title": "Hi"}},
        "sms": {"en": {"text": "Hi"}},
        "email": {"en": {"subject": "Hi", "text": "Hello"}},
    },
}


@pytest.fixture
def social_type():
    from notifications.selectors import notification_type_cache_clear

    notification_type_cache_clear()
    return notification_type_put(key="comment.created", body=TYPE)[0]


def prefs(external_id: str, document: dict) -> None:
    recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
    preferences_put(recipient_id=recipient.id, body=document)


def deliver(api_key, external_id: str = "ana", **event) -> dict[str, tuple[str, str]]:
    body = {"type": "comment.created", "recipients": [external_id], **event}
    event_fan_out_page(event_id=event_accept(api_key_id=api_key[0].id, body=body).id, page=0)
    rows = Delivery.objects.filter(notification__recipient__external_id=external_id).values_list(
        "channel", "status", "reason"
    )
    return {channel: (status, reason) for channel, status, reason in rows}


def visible(external_id: str = "ana") -> bool:
    return Notification.objects.get(recipient__external_id=external_id).visible


def test_without_any_setting_every_type_channel_is_on(api_key, social_type):
    assert deliver(api_key) == {"email": ("queued", ""), "sms": ("queued", "")}
    assert visible()


def test_channels_outside_the_type_or_the_event_get_no_delivery(api_key, social_type):
    assert deliver(api_key, channels=["in_app", "email", "push"]) == {"email": ("queued", "")}


def test_global_off_skips_the_channel_with_reason_preference(api_key, social_type):
    prefs("ana", {"channels": {"sms": False}})
    assert deliver(api_key) == {"email": ("queued", ""), "sms": ("skipped", "preference")}


def test_category_off_beats_global_on(api_key, social_type):
    prefs("ana", {"channels": {"email": True}, "categories": {"social": {"email": False}}})
    assert deliver(api_key)["email"] == ("skipped", "preference")


def test_category_on_beats_global_off(api_key, social_type):
    prefs("ana", {"channels": {"email": False}, "categories": {"social": {"email": True}}})
    assert deliver(api_key)["email"] == ("queued", "")


def test_type_on_beats_category_off(api_key, social_type):
    prefs(
        "ana",
        {"categories": {"social": {"email": False}}, "types": {"comment.created": {"email": True}}},
    )
    assert deliver(api_key)["email"] == ("queued", "")


def test_type_off_beats_category_and_global_on(api_key, social_type):
    prefs(
        "ana",
        {
            "channels": {"email": True},
            "categories": {"social": {"email": True}},
            "types": {"comment.created": {"email": False}},
        },
    )
    assert deliver(api_key)["email"] == ("skipped", "preference")


def test_settings_for_other_types_and_categories_do_not_apply(api_key, social_type):
    prefs(
        "ana",
        {"categories": {"billing": {"email": False}}, "types": {"order.shipped": {"email": False}}},
    )
    assert deliver(api_key)["email"] == ("queued", "")


def test_required_channel_ignores_off_at_every_scope(api_key, social_type):
    notification_type_put(
        key="comment.created", body={**TYPE, "required_channels": ["email", "in_app"]}
    )
    from notifications.selectors import notification_type_cache_clear

    notification_type_cache_clear()
    prefs(
        "ana",
        {
            "channels": {"email": False, "in_app": False},
            "types": {"comment.created": {"email": False, "in_app": False}},
        },
    )
    assert deliver(api_key)["email"] == ("queued", "")
    assert visible()


def test_in_app_off_hides_the_notification_from_inbox_and_count(api_key, producer, social_type):
    prefs("ana", {"categories": {"social": {"in_app": False}}})
    assert deliver(api_key) == {"email": ("queued", ""), "sms": ("queued", "")}
    assert not visible()
    client = inbox_client(producer, "ana")
    assert client.get("/api/v1/inbox").json()["results"] == []
    assert client.get("/api/v1/inbox/unread-count").json() == {"count": 0}


def test_one_recipients_settings_do_not_touch_anothers(api_key, social_type):
    prefs("ana", {"channels": {"email": False}})
    assert deliver(api_key, "bob")["email"] == ("queued", "")


def test_preferences_add_no_query_per_recipient(api_key, social_type, settings):
    subscribe_many("fans", 2000, prefix="fan")
    for n in range(1, 2001, 3):
        prefs(
            f"fan-{n}", {"channels": {"email": False}, "types": {"comment.created": {"sms": False}}}
        )
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 2000}
    event_id = event_accept(
        api_key_id=api_key[0].id,
        body={"type": "comment.created", "recipients": [{"topic": "fans"}]},
    ).id
    with CaptureQueriesContext(connection) as queries:
        event_fan_out_page(event_id=event_id, page=0)
    assert len(queries) <= 6 + FIRST_PAGE_BOOKKEEPING
    skipped = Delivery.objects.filter(status="skipped", reason="preference").count()
    assert skipped == 2 * len(range(1, 2001, 3))


def test_producer_and_recipient_read_and_replace_the_same_document(producer):
    document = {
        "channels": {"sms": False},
        "categories": {"social": {"email": False}},
        "types": {"comment.created": {"email": True}},
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "daily_caps": {"email": 5},
    }
    assert (
        producer.put("/api/v1/recipients/ana/preferences", document, format="json").json()
        == document
    )
    client = inbox_client(producer, "ana")
    assert client.get("/api/v1/inbox/preferences").json() == document
    assert (
        client.put(
            "/api/v1/inbox/preferences", {"channels": {"email": False}}, format="json"
        ).status_code
        == 200
    )
    assert producer.get("/api/v1/recipients/ana/preferences").json()["channels"] == {"email": False}
    assert producer.get("/api/v1/recipients/ana/preferences").json()["quiet_hours"] is None


def test_bad_preferences_name_each_field(producer):
    response = producer.put(
        "/api/v1/recipients/ana/preferences",
        {
            "channels": {"pigeon": True, "email": "yes"},
            "quiet_hours": {"start": "25:00", "end": "07:00"},
            "daily_caps": {"email": -1},
            "extra": 1,
        },
        format="json",
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {
        "channels.pigeon",
        "channels.email",
        "quiet_hours.start",
        "daily_caps.email",
        "extra",
    } <= set(errors)


def test_erasure_removes_preferences_and_export_includes_them(producer):
    producer.put("/api/v1/recipients/ana/preferences", {"channels": {"sms": False}}, format="json")
    assert producer.get("/api/v1/recipients/ana/export").json()["preferences"]["channels"] == {
        "sms": False
    }
    assert producer.delete("/api/v1/recipients/ana").status_code == 204
    from preferences.models import ChannelPreference, DeliverySettings

    assert not ChannelPreference.objects.exists() and not DeliverySettings.objects.exists()
