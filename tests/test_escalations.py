"""Unread escalation: an in-app item still unread after the type's delay is
delivered on the escalation's channels, once; reading it first cancels it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications.models import Delivery, Notification, Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.inbox import notification_mark
from notifications.services.sweep_runs import SweepTally
from notifications.services.types import notification_type_put
from preferences.services import preferences_put
from triggers.services.escalation_sweep import escalations_sweep

TEMPLATES = {
    "in_app": {"en": {"title": "Approve {{ doc }}", "body": "waiting"}},
    "email": {"en": {"subject": "Still waiting: {{ doc }}", "text": "Please approve."}},
    "sms": {"en": {"text": "Approve {{ doc }}"}},
}
APPROVAL = {
    "category": "approvals",
    "channels": ["in_app"],
    "templates": TEMPLATES,
    "escalation": {"after_seconds": 900, "channels": ["email"]},
}


@pytest.fixture
def approval_type(db):
    notification_type_cache_clear()
    return notification_type_put(key="approval.requested", body=APPROVAL)[0]


def notify(api_key, recipient: str, type_key: str = "approval.requested") -> Notification:
    Recipient.objects.update_or_create(
        external_id=recipient, defaults={"email": f"{recipient}@example.com"}
    )
    event_id = event_accept(
        api_key_id=api_key[0].id,
        body={"type": type_key, "recipients": [recipient], "data": {"doc": "PO-7"}},
    ).id
    event_fan_out_page(event_id=event_id, page=0)
    return Notification.objects.get(event_id=event_id)


def sweep(after: float = 901) -> SweepTally:
    return escalations_sweep(SweepTally(), now=timezone.now() + timedelta(seconds=after))


def deliveries(notification: Notification) -> list[tuple[str, str, str]]:
    return list(
        Delivery.objects.filter(notification=notification)
        .order_by("channel")
        .values_list("channel", "status", "reason")
    )


@pytest.mark.django_db
def test_an_item_unread_after_the_delay_is_delivered_on_the_escalation_channels_once(
    api_key, approval_type
):
    notification = notify(api_key, "boss")

    first = sweep()
    second = sweep(after=2000)

    assert deliveries(notification) == [("email", "queued", "escalation")]
    assert (first.produced, second.produced) == (1, 0)


@pytest.mark.django_db
def test_an_item_read_before_the_delay_is_not_escalated(api_key, approval_type):
    notification = notify(api_key, "boss")
    notification_mark(
        recipient_id=notification.recipient_id, notification_id=str(notification.id), action="read"
    )

    sweep()

    assert deliveries(notification) == []


@pytest.mark.django_db
def test_reading_after_the_escalation_was_queued_skips_it(api_key, approval_type):
    notification = notify(api_key, "boss")
    sweep()

    notification_mark(
        recipient_id=notification.recipient_id, notification_id=str(notification.id), action="read"
    )

    assert deliveries(notification) == [("email", "skipped", "read")]


@pytest.mark.django_db
def test_an_item_not_due_yet_waits_for_a_later_sweep(api_key, approval_type):
    notification = notify(api_key, "boss")

    early = sweep(after=100)
    later = sweep(after=901)

    assert early.produced == 0 and later.produced == 1
    assert deliveries(notification) == [("email", "queued", "escalation")]


@pytest.mark.django_db
def test_a_young_item_holds_the_cursor_back_for_older_ones_behind_it(api_key, approval_type):
    old = notify(api_key, "boss")
    young = notify(api_key, "boss2")
    Notification.objects.filter(id=old.id).update(created_at=timezone.now() + timedelta(hours=1))

    sweep()  # the first by id is not due: nothing may be skipped past it
    sweep(after=3600 + 901)

    assert deliveries(old) == [("email", "queued", "escalation")]
    assert deliveries(young) == [("email", "queued", "escalation")]


@pytest.mark.django_db
def test_the_recipients_channel_preference_still_applies(api_key, approval_type):
    boss = Recipient.objects.create(external_id="boss", email="boss@example.com")
    preferences_put(recipient_id=boss.id, body={"channels": {"email": False}})
    notification = notify(api_key, "boss")

    sweep()

    assert deliveries(notification) == [("email", "skipped", "preference")]


@pytest.mark.django_db
def test_a_channel_the_type_already_delivers_on_is_not_sent_twice(api_key, db):
    notification_type_cache_clear()
    notification_type_put(
        key="approval.requested",
        body={**APPROVAL, "channels": ["in_app", "email"]},
    )
    notification = notify(api_key, "boss")
    before = deliveries(notification)

    sweep()

    assert deliveries(notification) == before == [("email", "queued", "")]


@pytest.mark.django_db
def test_types_without_escalation_are_left_alone(api_key, approval_type):
    notification_type_put(key="plain", body={**APPROVAL, "escalation": None})
    notification = notify(api_key, "boss", type_key="plain")

    sweep()

    assert deliveries(notification) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("escalation", "field"),
    [
        ({"after_seconds": 10, "channels": ["email"]}, "escalation.after_seconds"),
        ({"after_seconds": 10**12, "channels": ["email"]}, "escalation.after_seconds"),
        ({"after_seconds": True, "channels": ["email"]}, "escalation.after_seconds"),
        ({"after_seconds": 900, "channels": ["in_app"]}, "escalation.channels"),
        ({"after_seconds": 900, "channels": []}, "escalation.channels"),
        ({"after_seconds": 900}, "escalation"),
        ("soon", "escalation"),
        ({"after_seconds": 900, "channels": ["push"]}, "templates.push"),
    ],
)
def test_a_bad_escalation_is_refused_naming_the_field(producer, escalation, field):
    response = producer.put(
        "/api/v1/notification-types/approval.requested",
        {**APPROVAL, "escalation": escalation},
        format="json",
    )

    assert response.status_code == 422, response.content
    assert field in response.json()["errors"], response.json()["errors"]


@pytest.mark.django_db
def test_quiet_hours_hold_the_escalation_until_they_end(api_key, approval_type):
    boss = Recipient.objects.create(external_id="boss", email="boss@example.com", timezone="UTC")
    at = timezone.now() + timedelta(seconds=901)  # when the sweep below runs
    quiet = {
        "start": f"{(at - timedelta(hours=1)):%H:%M}",
        "end": f"{(at + timedelta(hours=1)):%H:%M}",
    }
    preferences_put(recipient_id=boss.id, body={"quiet_hours": quiet})
    notification = notify(api_key, "boss")

    sweep()

    [(channel, status, reason)] = deliveries(notification)
    assert (channel, status, reason) == ("email", "queued", "quiet_hours")
