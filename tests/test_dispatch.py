"""Due deliveries go to the send workers on their event's priority queue; held ones wait."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from delivery.services.dispatch import deliveries_claim_due, deliveries_dispatch_due
from delivery.services.send import deliveries_send
from notifications.models import Delivery, Recipient
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put
from preferences.services import preferences_put

UTC = UTC
TYPE = {
    "category": "social",
    "channels": ["in_app", "email", "sms"],
    "templates": {
        "in_app": {"en": {"title": "Hi"}},
        "email": {
            "en": {"subject": "Hi {{ recipient.external_id }}", "html": "<p>{{ comment }}</p>"},
            "pt": {"subject": "Oi {{ recipient.external_id }}", "text": "{{ comment }}"},
        },
        "sms": {"en": {"text": "{{ comment }}"}},
    },
}
NIGHT = datetime(2026, 7, 1, 23, 30, tzinfo=UTC)  # inside 22:00-07:00 UTC
MORNING = datetime(2026, 7, 2, 7, 0, tzinfo=UTC)


def send_event(api_key, external_id: str, now: datetime, **extra) -> str:
    Recipient.objects.update_or_create(
        external_id=external_id,
        defaults={"email": f"{external_id}@example.com", "phone": "+15550100"},
    )
    body = {
        "type": "comment.created",
        "recipients": [external_id],
        "data": {"comment": "a <b>"},
        **extra,
    }
    event_id = event_accept(api_key_id=api_key[0].id, body=body).id
    event_fan_out_page(event_id=event_id, page=0, now=now)
    return event_id


def deliveries_of(event_id: str) -> list[Delivery]:
    return list(Delivery.objects.filter(notification__event_id=event_id).order_by("channel"))


def queued_sends(redis_client, queue: str) -> list[dict]:
    """The `clarion.delivery.send` messages waiting on a priority queue."""
    sends = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "clarion.delivery.send":
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            sends.append(kwargs)
    return sends


@pytest.mark.django_db
def test_a_delivery_held_by_quiet_hours_is_claimed_only_when_they_end(api_key, social_type):
    ana = Recipient.objects.create(external_id="ana", timezone="UTC", email="ana@example.com")
    preferences_put(recipient_id=ana.id, body={"quiet_hours": {"start": "22:00", "end": "07:00"}})
    event_id = send_event(api_key, "ana", NIGHT)

    assert deliveries_claim_due(now=MORNING - timedelta(seconds=1)).deliveries == []
    claim = deliveries_claim_due(now=MORNING)

    assert sorted(channel for _, channel, _ in claim.deliveries) == ["email", "sms"]
    assert [(d.status, d.reason, d.next_attempt_at) for d in deliveries_of(event_id)] == [
        ("queued", "sending", claim.lease),
        ("queued", "sending", claim.lease),
    ]


@pytest.mark.django_db
def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(
    api_key, social_type, settings
):
    send_event(api_key, "bo", NIGHT)
    first = deliveries_claim_due(now=NIGHT)

    assert deliveries_claim_due(now=NIGHT + timedelta(seconds=1)).deliveries == []
    again = deliveries_claim_due(now=first.lease)

    assert len(first.deliveries) == len(again.deliveries) == 2
    assert again.lease > first.lease


@pytest.mark.django_db
def test_each_send_goes_on_its_events_priority_queue(api_key, social_type, redis_client):
    critical = send_event(api_key, "cy", NIGHT, priority="critical")
    low = send_event(api_key, "di", NIGHT, priority="low")

    assert deliveries_dispatch_due(now=NIGHT) == 4

    ids = {d.id: event for event in (critical, low) for d in deliveries_of(event)}
    on_critical = [
        i for send in queued_sends(redis_client, "critical") for i in send["delivery_ids"]
    ]
    on_low = [i for send in queued_sends(redis_client, "low") for i in send["delivery_ids"]]
    assert {ids[i] for i in on_critical} == {critical} and len(on_critical) == 2
    assert {ids[i] for i in on_low} == {low} and len(on_low) == 2
    assert queued_sends(redis_client, "normal") == []


@pytest.mark.django_db
def test_without_a_provider_a_delivery_is_skipped_with_reason_no_provider(api_key, social_type):
    event_id = send_event(api_key, "ed", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    counts = deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    assert counts == {"no_provider": 2}
    assert [(d.status, d.reason, d.attempts) for d in deliveries_of(event_id)] == [
        ("skipped", "no_provider", 1)
    ] * 2


@pytest.mark.django_db
def test_a_send_message_from_an_ended_lease_changes_nothing(api_key, social_type):
    event_id = send_event(api_key, "fa", NIGHT)
    stale = deliveries_claim_due(now=NIGHT)
    current = deliveries_claim_due(now=stale.lease)

    assert (
        deliveries_send(delivery_ids=[d for d, _, _ in stale.deliveries], lease=stale.lease) == {}
    )
    assert deliveries_send(
        delivery_ids=[d for d, _, _ in current.deliveries], lease=current.lease
    ) == {"no_provider": 2}
    assert (
        deliveries_send(delivery_ids=[d for d, _, _ in current.deliveries], lease=current.lease)
        == {}
    )
    assert {d.attempts for d in deliveries_of(event_id)} == {1}


@pytest.mark.django_db
def test_the_admin_releases_a_held_delivery_and_requeues_a_skipped_one(
    api_key, social_type, admin_client
):
    ana = Recipient.objects.create(external_id="gu", timezone="UTC", email="gu@example.com")
    preferences_put(recipient_id=ana.id, body={"quiet_hours": {"start": "00:00", "end": "23:59"}})
    held = deliveries_of(send_event(api_key, "gu", datetime.now(UTC).replace(hour=12)))
    settled = send_event(api_key, "ha", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)
    deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    url = "/admin/notifications/delivery/"
    admin_client.post(url, {"action": "send_now", "_selected_action": [d.id for d in held]})
    admin_client.post(
        url, {"action": "requeue", "_selected_action": [d.id for d in deliveries_of(settled)]}
    )

    assert {(d.status, d.reason) for d in deliveries_of(held[0].notification.event_id)} == {
        ("queued", "")
    }
    assert sorted(d for d, _, _ in deliveries_claim_due().deliveries) == sorted(
        [d.id for d in held] + [d.id for d in deliveries_of(settled)]
    )
    assert admin_client.get(url + "?reason=no_provider").status_code == 200


@pytest.mark.django_db
def test_content_is_rendered_at_send_in_the_recipients_locale_and_kept(api_key, social_type):
    Recipient.objects.create(
        external_id="ines", locale="pt-BR", email="ines@example.com", phone="+351"
    )
    event_id = send_event(api_key, "ines", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)
    deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    email, sms = deliveries_of(event_id)
    assert (email.address, email.content) == (
        "ines@example.com",
        {"subject": "Oi ines", "text": "a <b>"},
    )
    assert (sms.address, sms.content) == ("+15550100", {"text": "a <b>"})


@pytest.mark.django_db
def test_a_template_that_fails_fails_only_its_delivery_and_says_why(api_key, social_type):
    notification_type_put(
        key="comment.created",
        body={
            **TYPE,
            "templates": {
                **TYPE["templates"],
                "sms": {"en": {"text": "{{ comment }} {{ missing.attr }}"}},
            },
        },
    )
    notification_type_cache_clear()
    event_id = send_event(api_key, "jo", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    counts = deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    email, sms = deliveries_of(event_id)
    assert counts == {"template_failed": 1, "no_provider": 1}
    assert (email.status, email.content["subject"]) == ("skipped", "Hi jo")
    assert (sms.status, sms.reason) == ("failed", "template")
    assert "missing" in sms.attempt_log.get().error


@pytest.mark.django_db
def test_an_email_whose_subject_renders_empty_fails_and_is_not_sent(
    api_key, social_type, settings, caplog
):
    email_only(settings, "delivery.console.ConsoleProvider")
    empty_subject = {"en": {"subject": "{{ headline }}", "text": "{{ comment }}"}}
    notification_type_put(
        key="comment.created",
        body={**TYPE, "templates": {**TYPE["templates"], "email": empty_subject}},
    )
    notification_type_cache_clear()
    event_id = send_event(api_key, "jo", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    with caplog.at_level("INFO", logger="clarion.delivery.console"):
        counts = deliveries_send(delivery_ids=[d for d, *_ in claim.deliveries], lease=claim.lease)

    email, sms = deliveries_of(event_id)
    assert counts == {"template_failed": 1, "no_provider": 1}
    assert (email.status, email.reason) == ("failed", "template")
    assert email.attempt_log.get().error == (
        "email.subject rendered empty: An email needs a subject."
    )
    assert (sms.status, sms.reason) == ("skipped", "no_provider")
    assert "jo@example.com" not in caplog.text


@pytest.mark.django_db
def test_a_hostile_type_fails_only_its_own_deliveries_and_quickly(api_key, social_type):
    hostile = {
        "category": "social",
        "channels": ["sms"],
        "templates": {"sms": {"en": {"text": "{{ ((((9**64)**64)**64)**64) > 0 }}"}}},
    }
    notification_type_put(key="hostile", body=hostile)
    notification_type_cache_clear()
    good_event = send_event(api_key, "jo", NIGHT)
    Recipient.objects.create(external_id="lu", phone="+15550101")
    hostile_event = event_accept(
        api_key_id=api_key[0].id, body={"type": "hostile", "recipients": ["jo", "lu"]}
    ).id
    event_fan_out_page(event_id=hostile_event, page=0, now=NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    started = time.thread_time()
    counts = deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    assert time.thread_time() - started < 1.0
    assert counts == {"template_failed": 2, "no_provider": 2}
    assert {(d.channel, d.status, d.reason) for d in deliveries_of(hostile_event)} == {
        ("sms", "failed", "template")
    }
    assert [(d.channel, d.status, d.content) for d in deliveries_of(good_event)] == [
        ("email", "skipped", {"subject": "Hi jo", "html": "<p>a &lt;b&gt;</p>", "text": "a <b>"}),
        ("sms", "skipped", {"text": "a <b>"}),
    ]


@pytest.mark.django_db
def test_a_recipient_without_an_address_is_skipped_with_reason_no_address(api_key, social_type):
    Recipient.objects.create(external_id="kim")
    event_id = event_accept(
        api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": ["kim"]}
    ).id
    event_fan_out_page(event_id=event_id, page=0, now=NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    assert deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease) == {
        "no_address": 2
    }
    assert {(d.status, d.reason) for d in deliveries_of(event_id)} == {("skipped", "no_address")}


def email_only(settings, provider: str) -> None:
    settings.CLARION = {**settings.CLARION, "PROVIDERS": {"email": provider}}


@pytest.mark.django_db
def test_a_provider_sends_the_rendered_message_and_the_delivery_is_sent(
    api_key, social_type, settings, caplog
):
    email_only(settings, "delivery.console.ConsoleProvider")
    event_id = send_event(api_key, "lu", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    with caplog.at_level("INFO", logger="clarion.delivery.console"):
        counts = deliveries_send(
            delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease
        )

    email, sms = deliveries_of(event_id)
    assert counts == {"sent": 1, "no_provider": 1}
    assert (email.status, email.attempts, sms.status) == ("sent", 1, "skipped")
    assert "email to lu@example.com" in caplog.text and "Hi lu" in caplog.text


@pytest.mark.django_db
def test_a_provider_that_cannot_be_reached_queues_its_deliveries_for_a_retry_with_the_error_logged(
    api_key, social_type, settings
):
    email_only(settings, "tests.providers.UnreachableProvider")
    event_id = send_event(api_key, "mo", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    assert deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease) == {
        "queued": 1,
        "no_provider": 1,
    }
    email = deliveries_of(event_id)[0]
    assert (email.status, email.reason, email.attempts) == ("queued", "provider_error", 1)
    assert email.next_attempt_at is not None and email.next_attempt_at != claim.lease
    attempt = email.attempt_log.get()
    assert "connection refused" in attempt.error and attempt.outcome == "retry"


@pytest.mark.django_db
def test_an_outcome_that_comes_after_the_lease_ended_is_not_recorded(
    api_key, social_type, settings
):
    email_only(settings, "tests.providers.SlowConsoleProvider")
    event_id = send_event(api_key, "ny", NIGHT)
    claim = deliveries_claim_due(now=NIGHT)

    deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    email = deliveries_of(event_id)[0]
    assert (
        email.status == "queued" and email.next_attempt_at > claim.lease
    )  # the new claim owns it now


def test_providers_are_read_in_order_and_a_channel_may_repeat(monkeypatch):
    from config.env import env_pairs

    monkeypatch.setenv(
        "CLARION_PROVIDERS",
        "email=smtp://u:p@mail.example.com:587?starttls=1&from=a@b.c,\n"
        "  email=smtp://backup.example.com:25, sms=twilio://AC1:tok@api.twilio.com?from=%2B1555,",
    )
    assert env_pairs("CLARION_PROVIDERS", []) == [
        ("email", "smtp://u:p@mail.example.com:587?starttls=1&from=a@b.c"),
        ("email", "smtp://backup.example.com:25"),
        ("sms", "twilio://AC1:tok@api.twilio.com?from=%2B1555"),
    ]
    monkeypatch.setenv("CLARION_PROVIDERS", "email")
    with pytest.raises(Exception, match="key=value"):
        env_pairs("CLARION_PROVIDERS", [])
