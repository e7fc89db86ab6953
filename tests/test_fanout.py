"""Fan-out pages: exactly once, resumable, a constant number of queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from tests.helpers import FIRST_PAGE_BOOKKEEPING, event_row, scalar, subscribe_many

pytestmark = pytest.mark.django_db


def accept(api_key, recipients, **extra) -> str:
    body = {
        "type": "comment.created",
        "recipients": recipients,
        "actor": "ana",
        "data": {"comment": "hi", "post_id": 7},
        **extra,
    }
    return event_accept(api_key_id=api_key[0].id, body=body).id


def run_all_pages(event_id: str) -> int:
    page = 0
    while True:
        result = event_fan_out_page(event_id=event_id, page=page)
        assert result.ran
        if result.done:
            return page + 1
        page = result.next_page


def test_explicit_recipients_are_created_on_the_fly_and_notified(api_key, comment_type):
    event_id = accept(api_key, ["new-1", "new-2"])
    run_all_pages(event_id)
    assert (
        scalar("SELECT count(*) FROM notifications_recipient WHERE external_id LIKE 'new-%%'") == 2
    )
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == 2
    )
    assert event_row(event_id) == {"status": "done", "page": 1, "recipient_count": 2}


def test_in_app_title_is_rendered_from_the_type_template(api_key, comment_type):
    event_id = accept(api_key, ["r1"])
    run_all_pages(event_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT title, body, url FROM notifications_notification WHERE event_id = %s",
            [event_id],
        )
        assert cursor.fetchone() == ("ana commented", "hi", "/posts/7")


def test_one_delivery_row_per_external_channel(api_key, comment_type):
    event_id = accept(api_key, ["r1", "r2"])
    run_all_pages(event_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.channel, d.status, count(*) FROM notifications_delivery d"
            " JOIN notifications_notification n ON n.id = d.notification_id"
            " WHERE n.event_id = %s GROUP BY 1, 2",
            [event_id],
        )
        assert cursor.fetchall() == [("email", "queued", 2)]


def test_event_channels_narrow_the_type_channels(api_key, comment_type):
    event_id = accept(api_key, ["r1"], channels=["email"])
    run_all_pages(event_id)
    assert (
        scalar("SELECT visible FROM notifications_notification WHERE event_id = %s", [event_id])
        is False
    )
    assert scalar("SELECT count(*) FROM notifications_delivery") == 1


def test_topic_pages_cover_every_subscriber_once(api_key, comment_type, settings):
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 1000}
    subscribe_many("big", 2500)
    event_id = accept(api_key, [{"topic": "big"}, "extra-1"])
    pages = run_all_pages(event_id)
    assert pages == 3  # explicit + 999 | 1000 | 501, the topic's end found on the last
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == 2501
    )
    assert event_row(event_id)["recipient_count"] == 2501


def test_recipient_in_two_topics_is_notified_once(api_key, comment_type, producer):
    producer.put("/api/v1/topics/t1/subscribers", {"add": ["a", "b"]}, format="json")
    producer.put("/api/v1/topics/t2/subscribers", {"add": ["b", "c"]}, format="json")
    event_id = accept(api_key, [{"topic": "t1"}, {"topic": "t2"}, "a"])
    run_all_pages(event_id)
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == 3
    )
    assert event_row(event_id)["recipient_count"] == 3


def test_a_page_run_twice_has_the_effect_of_once(api_key, comment_type, settings):
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 1000}
    subscribe_many("twice", 1500)
    event_id = accept(api_key, [{"topic": "twice"}])
    first = event_fan_out_page(event_id=event_id, page=0)
    again = event_fan_out_page(event_id=event_id, page=0)
    assert first.ran and first.inserted == 1000
    assert not again.ran
    event_fan_out_page(event_id=event_id, page=1)
    event_fan_out_page(event_id=event_id, page=1)
    assert (
        scalar("SELECT count(*) FROM notifications_notification WHERE event_id = %s", [event_id])
        == 1500
    )
    assert scalar("SELECT count(*) FROM notifications_delivery") == 1500
    assert event_row(event_id) == {"status": "done", "page": 2, "recipient_count": 1500}


def test_a_page_of_a_later_number_waits_for_its_turn(api_key, comment_type):
    event_id = accept(api_key, ["r1"])
    assert not event_fan_out_page(event_id=event_id, page=3).ran
    assert event_row(event_id)["status"] == "accepted"


def test_cancelled_and_scheduled_events_do_not_fan_out(api_key, comment_type, producer):
    event_id = accept(api_key, ["r1"], send_at="2999-01-01T00:00:00Z")
    assert not event_fan_out_page(event_id=event_id, page=0).ran
    assert producer.delete(f"/api/v1/events/{event_id}").status_code == 204
    assert event_row(event_id)["status"] == "cancelled"
    assert scalar("SELECT count(*) FROM notifications_notification") == 0


def _queries_for_page(api_key, topic: str, size: int, settings) -> int:
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": size}
    event_id = accept(api_key, [{"topic": topic}])
    with CaptureQueriesContext(connection) as queries:
        result = event_fan_out_page(event_id=event_id, page=0)
    assert result.inserted == size
    return len(queries)


def test_queries_per_page_do_not_grow_with_page_size(api_key, comment_type, settings):
    subscribe_many("small", 1000, prefix="s")
    subscribe_many("large", 5000, prefix="l")
    small = _queries_for_page(api_key, "small", 1000, settings)
    large = _queries_for_page(api_key, "large", 5000, settings)
    assert small == large
    assert large <= 6 + FIRST_PAGE_BOOKKEEPING


def test_per_recipient_rendering_keeps_queries_constant(api_key, producer, settings):
    producer.put(
        "/api/v1/notification-types/hello",
        {
            "templates": {
                "in_app": {
                    "en": {"title": "Hi {{ recipient.external_id }}"},
                    "pt": {"title": "Olá {{ recipient.external_id }}"},
                }
            }
        },
        format="json",
    )
    producer.put("/api/v1/recipients/l-1", {"locale": "pt-BR"}, format="json")
    subscribe_many("loc", 3000, prefix="l")
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 3000}
    event_id = event_accept(
        api_key_id=api_key[0].id, body={"type": "hello", "recipients": [{"topic": "loc"}]}
    ).id
    with CaptureQueriesContext(connection) as queries:
        event_fan_out_page(event_id=event_id, page=0)
    assert len(queries) <= 6 + FIRST_PAGE_BOOKKEEPING
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.external_id, n.title FROM notifications_notification n"
            " JOIN notifications_recipient r ON r.id = n.recipient_id"
            " WHERE r.external_id IN ('l-1', 'l-2') ORDER BY 1"
        )
        assert cursor.fetchall() == [("l-1", "Olá l-1"), ("l-2", "Hi l-2")]


@pytest.mark.django_db(transaction=True)
def test_a_recipient_created_by_two_events_at_once_gets_both(api_key, comment_type):
    """The upsert of a new recipient races another transaction creating it."""
    from tests.helpers import run_concurrently

    event_ids = [accept(api_key, ["brand-new"]) for _ in range(8)]
    run_concurrently(
        lambda event_id: event_fan_out_page(event_id=event_id, page=0), [(e,) for e in event_ids]
    )
    assert (
        scalar(
            "SELECT count(*) FROM notifications_notification n JOIN notifications_recipient r"
            " ON r.id = n.recipient_id WHERE r.external_id = 'brand-new'"
        )
        == 8
    )
