"""Digests: one notification per (recipient, type, key) window, exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from notifications.models import DigestItem, DigestWindow, Notification
from notifications.selectors import notification_type_cache_clear
from notifications.services.digests import digests_flush_due
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.types import notification_type_put

UTC = UTC
DIGEST_TYPE = {
    "category": "social",
    "channels": ["in_app", "email"],
    "digest": {"window_seconds": 300, "key": "{{ post_id }}", "max_batch": 50},
    "templates": {
        "in_app": {
            "en": {
                "title": "{{ digest.first_actor }}"
                "{% if digest.others %} and {{ digest.others }} others{% endif %}"
                " commented on {{ post_title }}",
                "body": "{{ digest.count }} comments",
            }
        },
        "email": {
            "en": {
                "subject": "{{ digest.count }} new comments on {{ post_title }}",
                "text": "{% for item in digest.items %}{{ item.actor }} {% endfor %}",
            }
        },
    },
}


@pytest.fixture
def digest_type(db):
    notification_type_cache_clear()
    return notification_type_put(key="comment.created", body=DIGEST_TYPE)[0]


def comment(api_key, actor: str, post: int = 7, recipients=("ana",), now=None, **extra) -> str:
    body = {
        "type": "comment.created",
        "recipients": list(recipients),
        "actor": actor,
        "data": {"post_id": post, "post_title": f"post {post}"},
        **extra,
    }
    event_id = event_accept(api_key_id=api_key[0].id, body=body).id
    event_fan_out_page(event_id=event_id, page=0, now=now)
    return event_id


def later(minutes: int = 10) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


@pytest.mark.django_db
def test_events_in_a_window_become_one_notification_naming_the_actors(api_key, digest_type):
    for actor in ("ana-b", "bo", "cy", "bo", "di"):
        comment(api_key, actor)
    assert Notification.objects.count() == 0
    assert digests_flush_due(now=later()) == 1
    notification = Notification.objects.get()
    assert notification.title == "ana-b and 3 others commented on post 7"
    assert notification.body == "5 comments"
    assert notification.delivery_set.get().channel == "email"


@pytest.mark.django_db
def test_each_digest_key_and_recipient_has_its_own_window(api_key, digest_type):
    comment(api_key, "a", post=1, recipients=("ana", "bob"))
    comment(api_key, "b", post=2, recipients=("ana",))
    assert digests_flush_due(now=later()) == 3
    assert Notification.objects.count() == 3


@pytest.mark.django_db
def test_a_window_is_not_sent_before_it_closes(api_key, digest_type):
    comment(api_key, "a")
    assert digests_flush_due() == 0
    assert DigestWindow.objects.get().status == "open"


@pytest.mark.django_db
def test_critical_events_are_never_digested(api_key, digest_type):
    comment(api_key, "a", priority="critical")
    assert Notification.objects.count() == 1
    assert not DigestWindow.objects.exists()


@pytest.mark.django_db
def test_reaching_max_batch_sends_at_once_and_opens_a_new_window(api_key, digest_type):
    notification_type_put(
        key="comment.created",
        body={**DIGEST_TYPE, "digest": {"window_seconds": 300, "max_batch": 3}},
    )
    notification_type_cache_clear()
    for actor in ("a", "b", "c", "d"):
        comment(api_key, actor)
    assert Notification.objects.count() == 1
    assert list(DigestWindow.objects.order_by("id").values_list("status", "item_count")) == [
        ("flushed", 3),
        ("open", 1),
    ]


@pytest.mark.django_db
def test_a_fixed_window_closes_on_the_clock(api_key, digest_type):
    notification_type_put(
        key="comment.created",
        body={**DIGEST_TYPE, "digest": {"window_seconds": 3600, "mode": "fixed"}},
    )
    notification_type_cache_clear()
    comment(api_key, "a", now=datetime(2026, 7, 1, 10, 20, tzinfo=UTC))
    assert DigestWindow.objects.get().closes_at == datetime(2026, 7, 1, 11, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_a_flush_run_twice_sends_once(api_key, digest_type):
    comment(api_key, "a")
    assert digests_flush_due(now=later()) == 1
    assert digests_flush_due(now=later()) == 0
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_a_flush_that_dies_midway_leaves_the_window_to_send_once(api_key, digest_type):
    comment(api_key, "a")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), transaction.atomic():
        digests_flush_due(now=later())
        raise Crash  # the worker dies before commit: everything rolls back
    assert Notification.objects.count() == 0
    assert digests_flush_due(now=later()) == 1
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_a_bad_digest_definition_is_422(producer):
    response = producer.put(
        "/api/v1/notification-types/x.y",
        {"digest": {"window_seconds": 0, "mode": "weekly"}},
        format="json",
    )
    assert response.status_code == 422
    assert {"digest.window_seconds", "digest.mode"} <= set(response.json()["errors"])


@pytest.mark.django_db(transaction=True)
def test_concurrent_producers_and_flushes_send_one_digest_per_window_and_lose_no_event(
    api_key, digest_type
):
    """Events less than a second apart from eight producers, flushes racing them."""
    notification_type_put(
        key="comment.created",
        body={**DIGEST_TYPE, "digest": {"window_seconds": 300, "max_batch": 7}},
    )
    notification_type_cache_clear()
    event_ids = [
        event_accept(
            api_key_id=api_key[0].id,
            body={
                "type": "comment.created",
                "recipients": ["ana"],
                "actor": f"p{n}",
                "data": {"post_id": 7},
            },
        ).id
        for n in range(40)
    ]
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def produce(chunk: list[str]) -> None:
        try:
            barrier.wait()
            for event_id in chunk:
                event_fan_out_page(event_id=event_id, page=0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    def flush() -> None:
        try:
            barrier.wait()
            for _ in range(20):
                digests_flush_due(now=later())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=produce, args=(event_ids[n::8],)) for n in range(8)]
    threads += [threading.Thread(target=flush) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    digests_flush_due(now=later())
    windows = list(DigestWindow.objects.values_list("status", "item_count"))
    assert all(status == "flushed" for status, _ in windows)
    assert sum(count for _, count in windows) == 40  # every event in exactly one window
    assert DigestItem.objects.values("event_id").distinct().count() == 40
    assert Notification.objects.filter(recipient__external_id="ana").count() == len(windows)
    assert DigestWindow.objects.filter(status="open").count() == 0


@pytest.mark.django_db
def test_a_critical_event_of_a_digest_type_renders_as_a_digest_of_one(api_key, digest_type):
    comment(api_key, "zed", priority="critical")
    assert Notification.objects.get().title == "zed commented on post 7"


@pytest.mark.django_db
def test_a_digest_counts_against_the_daily_cap_once(api_key, digest_type, clean_redis):
    from notifications.models import Recipient
    from preferences.services import preferences_put

    ana = Recipient.objects.create(external_id="ana")
    preferences_put(recipient_id=ana.id, body={"daily_caps": {"email": 1}})
    comment(api_key, "bo", post=1)
    comment(api_key, "cy", post=2)

    assert digests_flush_due(now=later()) == 2
    assert digests_flush_due(now=later()) == 0

    emails = [n.delivery_set.get() for n in Notification.objects.all()]
    assert sorted((e.status, e.reason) for e in emails) == [("queued", ""), ("skipped", "cap")]


@pytest.mark.django_db
def test_the_digest_message_is_rendered_with_the_windows_items_and_sent_as_rendered(
    api_key, digest_type
):
    from delivery.services.dispatch import deliveries_claim_due
    from delivery.services.send import deliveries_send
    from notifications.models import Recipient

    Recipient.objects.create(external_id="ana", email="ana@example.com")
    for actor in ("bo", "cy", "di"):
        comment(api_key, actor)
    digests_flush_due(now=later())
    claim = deliveries_claim_due(now=later(11))
    deliveries_send(delivery_ids=[d for d, _, _ in claim.deliveries], lease=claim.lease)

    email = Notification.objects.get().delivery_set.get()
    assert (email.status, email.reason) == ("skipped", "no_provider")
    assert email.content == {"subject": "3 new comments on post 7", "text": "bo cy di "}
