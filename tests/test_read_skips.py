"""Reading the in-app notification first: its external deliveries still
waiting are not sent any more (skipped, reason `read`)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from delivery.services.dispatch import deliveries_claim_due
from notifications.models import Notification, Recipient
from notifications.services.inbox import inbox_read_all, notification_mark
from preferences.services import preferences_put
from tests.test_dispatch import deliveries_of, send_event

ALL_DAY = {"quiet_hours": {"start": "00:00", "end": "23:59"}}


def held_event(api_key, external_id: str) -> tuple[str, Notification]:
    recipient = Recipient.objects.create(external_id=external_id, timezone="UTC")
    preferences_put(recipient_id=recipient.id, body=ALL_DAY)
    event_id = send_event(api_key, external_id, timezone.now())
    return event_id, Notification.objects.get(event_id=event_id)


@pytest.mark.django_db
def test_reading_the_notification_skips_its_deliveries_held_by_quiet_hours(api_key, social_type):
    event_id, notification = held_event(api_key, "q1")
    assert {d.reason for d in deliveries_of(event_id)} == {"quiet_hours"}

    notification_mark(
        recipient_id=notification.recipient_id, notification_id=str(notification.id), action="read"
    )

    assert {(d.status, d.reason) for d in deliveries_of(event_id)} == {("skipped", "read")}


@pytest.mark.django_db
def test_read_all_skips_the_waiting_deliveries_of_every_notification_read(api_key, social_type):
    first, notification = held_event(api_key, "q2")
    second = send_event(api_key, "q2", timezone.now())

    assert inbox_read_all(recipient_id=notification.recipient_id) == 2

    assert {(d.status, d.reason) for d in deliveries_of(first) + deliveries_of(second)} == {
        ("skipped", "read")
    }


@pytest.mark.django_db
def test_a_delivery_being_sent_when_it_is_read_is_left_to_finish(api_key, social_type):
    event_id = send_event(api_key, "q3", timezone.now())
    notification = Notification.objects.get(event_id=event_id)
    deliveries_claim_due()  # a send worker holds them now

    notification_mark(
        recipient_id=notification.recipient_id, notification_id=str(notification.id), action="read"
    )

    assert {(d.status, d.reason) for d in deliveries_of(event_id)} == {("queued", "sending")}


@pytest.mark.django_db
def test_marking_unread_or_archiving_skips_nothing(api_key, social_type):
    event_id, notification = held_event(api_key, "q4")
    for action in ("unread", "archive"):
        notification_mark(
            recipient_id=notification.recipient_id,
            notification_id=str(notification.id),
            action=action,
        )
    assert {d.status for d in deliveries_of(event_id)} == {"queued"}
