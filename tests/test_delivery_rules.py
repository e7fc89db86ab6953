"""Quiet hours (DST-correct, in the recipient's zone), daily caps and type
throttles, applied by the fan-out to every external channel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifications.models import Delivery, Notification, Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from preferences.services import preferences_put
from tests.helpers import run_concurrently

TYPE = {
    "category": "social",
    "channels": ["in_app", "email"],
    "templates": {
        "in_app": {"en": {"title": "Hi"}},
        "email": {"en": {"subject": "Hi", "text": "Hello"}},
    },
}
UTC = UTC


@pytest.fixture
def social_type(db, clean_redis):
    notification_type_cache_clear()
    return notification_type_put(key="comment.created", body=TYPE)[0]


def recipient(external_id: str, tz: str, **document) -> Recipient:
    person, _ = Recipient.objects.update_or_create(
        external_id=external_id, defaults={"timezone": tz}
    )
    preferences_put(recipient_id=person.id, body=document)
    return person


def fan_out(api_key, external_id: str, now: datetime, **event) -> str:
    body = {"type": "comment.created", "recipients": [external_id], "data": {"post_id": 7}, **event}
    event_id = event_accept(api_key_id=api_key[0].id, body=body).id
    event_fan_out_page(event_id=event_id, page=0, now=now)
    return event_id


def email_of(event_id: str) -> Delivery:
    return Delivery.objects.get(notification__event_id=event_id, channel="email")


QUIET = {"quiet_hours": {"start": "22:00", "end": "07:00"}}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tz,now,release",
    [
        # New York, the night the clocks fall back (1 Nov 2026): 23:30 EDT -> 07:00 EST = 12:00 UTC.
        (
            "America/New_York",
            datetime(2026, 11, 1, 3, 30, tzinfo=UTC),
            datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        ),
        # New York, the night the clocks spring forward (8 Mar 2026):
        # 23:00 EST -> 07:00 EDT = 11:00 UTC.
        (
            "America/New_York",
            datetime(2026, 3, 8, 4, 0, tzinfo=UTC),
            datetime(2026, 3, 8, 11, 0, tzinfo=UTC),
        ),
        # Berlin, the night the clocks fall back (25 Oct 2026): 23:30 CEST -> 07:00 CET = 06:00 UTC.
        (
            "Europe/Berlin",
            datetime(2026, 10, 24, 21, 30, tzinfo=UTC),
            datetime(2026, 10, 25, 6, 0, tzinfo=UTC),
        ),
        # Berlin, the night the clocks spring forward (29 Mar 2026):
        # 01:30 CET -> 07:00 CEST = 05:00 UTC.
        (
            "Europe/Berlin",
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
            datetime(2026, 3, 29, 5, 0, tzinfo=UTC),
        ),
    ],
)
def test_quiet_hours_defer_external_channels_to_the_local_end_across_dst(
    api_key, social_type, tz, now, release
):
    recipient("ana", tz, **QUIET)
    email = email_of(fan_out(api_key, "ana", now))
    assert (email.status, email.reason, email.next_attempt_at) == ("queued", "quiet_hours", release)


@pytest.mark.django_db
def test_outside_quiet_hours_a_delivery_is_due_at_once(api_key, social_type):
    recipient("ana", "Europe/Berlin", **QUIET)
    now = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)  # 12:00 in Berlin
    email = email_of(fan_out(api_key, "ana", now))
    assert (email.status, email.reason, email.next_attempt_at) == ("queued", "", now)


@pytest.mark.django_db
def test_a_daytime_window_defers_to_its_end_the_same_day(api_key, social_type):
    recipient("ana", "Asia/Tokyo", quiet_hours={"start": "13:00", "end": "15:00"})
    email = email_of(
        fan_out(api_key, "ana", datetime(2026, 7, 1, 4, 30, tzinfo=UTC))
    )  # 13:30 in Tokyo
    assert email.next_attempt_at == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_in_app_still_lands_during_quiet_hours(api_key, social_type):
    recipient("ana", "America/New_York", **QUIET)
    event_id = fan_out(api_key, "ana", datetime(2026, 11, 1, 3, 30, tzinfo=UTC))
    assert Notification.objects.get(event_id=event_id).visible


@pytest.mark.django_db
def test_critical_bypasses_quiet_hours(api_key, social_type):
    recipient("ana", "America/New_York", **QUIET)
    now = datetime(2026, 11, 1, 3, 30, tzinfo=UTC)
    email = email_of(fan_out(api_key, "ana", now, priority="critical"))
    assert (email.reason, email.next_attempt_at) == ("", now)


@pytest.mark.django_db
def test_a_daily_cap_skips_what_is_over_it_with_reason_cap(api_key, social_type):
    recipient("ana", "UTC", daily_caps={"email": 2})
    now = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    emails = [email_of(fan_out(api_key, "ana", now)) for _ in range(3)]
    assert [(e.status, e.reason) for e in emails] == [
        ("queued", ""),
        ("queued", ""),
        ("skipped", "cap"),
    ]


@pytest.mark.django_db
def test_the_cap_counts_per_local_day(api_key, social_type):
    recipient("ana", "Asia/Tokyo", daily_caps={"email": 1})
    first = email_of(
        fan_out(api_key, "ana", datetime(2026, 7, 1, 14, 0, tzinfo=UTC))
    )  # 23:00 1 Jul, Tokyo
    second = email_of(
        fan_out(api_key, "ana", datetime(2026, 7, 1, 15, 30, tzinfo=UTC))
    )  # 00:30 2 Jul, Tokyo
    assert (first.status, second.status) == ("queued", "queued")


@pytest.mark.django_db
def test_critical_bypasses_the_cap(api_key, social_type):
    recipient("ana", "UTC", daily_caps={"email": 0})
    email = email_of(fan_out(api_key, "ana", datetime(2026, 7, 1, tzinfo=UTC), priority="critical"))
    assert email.status == "queued"


@pytest.mark.django_db
def test_a_page_run_again_does_not_count_twice_against_the_cap(api_key, social_type, redis_client):
    person = recipient("ana", "UTC", daily_caps={"email": 1})
    now = datetime(2026, 7, 1, tzinfo=UTC)
    event_id = fan_out(api_key, "ana", now)
    # The counter remembers events, not increments: counting the same event again is a no-op.
    from notifications.services.limits import LimitedDelivery, deliveries_apply_limits

    row = LimitedDelivery(email_of(event_id).id, person.id, "email", 1, "2026-07-01")
    assert (
        deliveries_apply_limits(
            event_id=event_id, type_key="comment.created", throttle=None, data={}, rows=[row]
        )
        == {}
    )
    assert email_of(event_id).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_caps_hold_under_eight_concurrent_fan_outs(api_key, social_type):
    recipient("ana", "UTC", daily_caps={"email": 3})
    # The current time, not a fixed one: when the suite's Celery worker is up it
    # races these threads for the same pages, and must count on the same day.
    now = None
    event_ids = [
        event_accept(
            api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": ["ana"]}
        ).id
        for _ in range(8)
    ]
    run_concurrently(
        lambda event_id: event_fan_out_page(event_id=event_id, page=0, now=now),
        [(e,) for e in event_ids],
    )
    statuses = sorted(Delivery.objects.filter(channel="email").values_list("status", flat=True))
    assert statuses == ["queued"] * 3 + ["skipped"] * 5


@pytest.mark.django_db
def test_a_type_throttle_holds_back_over_the_limit_per_key(api_key, social_type):
    notification_type_put(
        key="comment.created",
        body={**TYPE, "throttle": {"limit": 2, "window_seconds": 3600, "key": "{{ post_id }}"}},
    )
    notification_type_cache_clear()
    Recipient.objects.create(external_id="ana")
    now = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    same_post = [email_of(fan_out(api_key, "ana", now)) for _ in range(3)]
    other_post = email_of(fan_out(api_key, "ana", now, data={"post_id": 8}))
    assert [(e.status, e.reason) for e in same_post] == [
        ("queued", ""),
        ("queued", ""),
        ("skipped", "throttle"),
    ]
    assert other_post.status == "queued"


@pytest.mark.django_db
def test_event_status_shows_skipped_deliveries_with_their_reasons(api_key, producer, social_type):
    recipient("ana", "UTC", daily_caps={"email": 0})
    recipient("bob", "UTC", channels={"email": False})
    event_id = event_accept(
        api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": ["ana", "bob"]}
    ).id
    event_fan_out_page(event_id=event_id, page=0)
    body = producer.get(f"/api/v1/events/{event_id}").json()
    assert body["deliveries"]["email"] == {"skipped": 2}
    assert body["delivery_reasons"]["email"] == {"cap": 1, "preference": 1}


@pytest.mark.django_db
def test_bad_throttle_is_422(producer):
    response = producer.put(
        "/api/v1/notification-types/x.y",
        {"throttle": {"limit": 0, "window_seconds": "1h"}},
        format="json",
    )
    assert response.status_code == 422
    assert {"throttle.limit", "throttle.window_seconds"} <= set(response.json()["errors"])


@pytest.mark.django_db
def test_quiet_hours_follow_a_time_zone_changed_after_the_preferences(
    api_key, producer, social_type
):
    recipient("ana", "UTC", **QUIET)
    producer.put("/api/v1/recipients/ana", {"timezone": "Asia/Tokyo"}, format="json")
    now = datetime(2026, 7, 1, 14, 0, tzinfo=UTC)  # 14:00 UTC is 23:00 in Tokyo: quiet
    email = email_of(fan_out(api_key, "ana", now))
    assert (email.reason, email.next_attempt_at) == (
        "quiet_hours",
        datetime(2026, 7, 1, 22, 0, tzinfo=UTC),
    )
