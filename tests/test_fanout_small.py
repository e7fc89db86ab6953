"""Many small events fanned out together: same result as one by one, constant queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Recipient
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.fanout_small import events_fan_out_small
from notifications.services.types import notification_type_put
from preferences.services import preferences_put
from tests.helpers import event_row, scalar, subscribe_many

pytestmark = pytest.mark.django_db


def accept(api_key, recipients, actor="ana", **extra) -> str:
    body = {
        "type": "comment.created",
        "recipients": recipients,
        "actor": actor,
        "data": {"comment": f"from {actor}", "post_id": 7},
        **extra,
    }
    return event_accept(api_key_id=api_key[0].id, body=body).id


def outcome_rows(event_ids: list[str], prefix: str) -> list[tuple]:
    """Notifications and deliveries, keyed by the event's position and the recipient without its
    prefix."""
    position = {event_id: index for index, event_id in enumerate(event_ids)}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT n.event_id::text, r.external_id, n.title, n.body, n.url, n.visible,
                   d.channel, d.status, d.reason
            FROM notifications_notification n
            JOIN notifications_recipient r ON r.id = n.recipient_id
            LEFT JOIN notifications_delivery d ON d.notification_id = n.id
            WHERE n.event_id = ANY(%s::uuid[])
            """,
            [event_ids],
        )
        rows = cursor.fetchall()
    return sorted((position[row[0]], row[1].removeprefix(prefix), *row[2:]) for row in rows)


def mixed_events(api_key, prefix: str) -> list[str]:
    muted = Recipient.objects.create(external_id=f"{prefix}c")
    preferences_put(recipient_id=muted.id, body={"channels": {"email": False}})
    capped = Recipient.objects.create(external_id=f"{prefix}a")
    preferences_put(recipient_id=capped.id, body={"daily_caps": {"email": 1}})
    return [
        accept(api_key, [f"{prefix}a", f"{prefix}b"], actor="xi"),
        accept(api_key, [f"{prefix}b", f"{prefix}c"], actor="yu"),
        accept(api_key, [f"{prefix}a"], actor="zo", channels=["email"]),
        accept(api_key, [f"{prefix}a", f"{prefix}c"], priority="critical"),
        accept(api_key, [f"{prefix}d"], actor="xi"),
    ]


def test_small_events_fan_out_together_as_they_would_one_by_one(api_key, comment_type, clean_redis):
    # One after the other: a lane hold takes every small event waiting.
    together = mixed_events(api_key, "t-")
    outcome = events_fan_out_small(event_ids=together)
    one_by_one = mixed_events(api_key, "o-")
    for event_id in one_by_one:
        event_fan_out_page(event_id=event_id, page=0)

    assert sorted(outcome.done) == sorted(together) and outcome.rest == [] and outcome.later == []
    rows = outcome_rows(together, "t-")
    assert rows == outcome_rows(one_by_one, "o-")
    assert {row[-2:] for row in rows} == {
        ("queued", ""),
        ("skipped", "preference"),
        ("skipped", "cap"),
    }
    assert [event_row(e) for e in together] == [event_row(e) for e in one_by_one]


def test_queries_do_not_grow_with_the_number_of_small_events(api_key, comment_type):
    few = [accept(api_key, [f"f{n}", "shared"]) for n in range(3)]
    with CaptureQueriesContext(connection) as for_few:
        events_fan_out_small(event_ids=few)
    many = [accept(api_key, [f"m{n}", "shared"]) for n in range(40)]
    with CaptureQueriesContext(connection) as for_many:
        events_fan_out_small(event_ids=many)

    assert len(for_many) == len(for_few)
    assert scalar("SELECT count(*) FROM notifications_notification") == 86


def test_a_lane_hold_takes_every_small_event_of_its_priority_waiting_oldest_first(
    api_key, comment_type
):
    waiting = [accept(api_key, [f"w{n}"]) for n in range(5)]

    outcome = events_fan_out_small(event_ids=[waiting[-1]])

    assert outcome.done == waiting
    assert [event_row(e)["status"] for e in waiting] == ["done"] * 5
    assert (
        scalar(
            "SELECT array_agg(e.id::text ORDER BY n.id) FROM notifications_notification n"
            " JOIN notifications_event e ON e.id = n.event_id"
        )
        == waiting
    )


def test_a_second_run_changes_nothing(api_key, comment_type):
    event_ids = [accept(api_key, [f"r{n}", f"s{n}"]) for n in range(5)]
    events_fan_out_small(event_ids=event_ids)

    again = events_fan_out_small(event_ids=event_ids)

    assert (again.done, again.rest, again.later) == ([], [], [])
    assert scalar("SELECT count(*) FROM notifications_notification") == 10
    assert {event_row(e)["recipient_count"] for e in event_ids} == {2}


def test_topic_and_digest_events_are_left_to_the_per_event_path(api_key, comment_type):
    subscribe_many("post:7:followers", 3)
    notification_type_put(
        key="digest.me",
        body={
            "category": "social",
            "channels": ["in_app"],
            "digest": {"window_seconds": 60, "key": "{{ post_id }}"},
            "templates": {"in_app": {"en": {"title": "{{ digest.count }} new"}}},
        },
    )
    small = accept(api_key, ["a"])
    topic = accept(api_key, [{"topic": "post:7:followers"}])
    digested = event_accept(
        api_key_id=api_key[0].id,
        body={"type": "digest.me", "recipients": ["a"], "data": {"post_id": 1}},
    ).id

    outcome = events_fan_out_small(event_ids=[small, topic, digested])

    assert outcome.done == [small]
    assert sorted(outcome.rest) == sorted([topic, digested])
    assert event_row(topic)["status"] == "accepted"


def test_small_events_beyond_the_page_budget_wait_for_the_next_call(
    api_key, comment_type, settings
):
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 3}
    event_ids = sorted(accept(api_key, [f"r{n}", f"s{n}"]) for n in range(3))

    first = events_fan_out_small(event_ids=event_ids)
    second = events_fan_out_small(event_ids=first.later)

    assert (len(first.done), len(first.later)) == (1, 2)
    assert (len(second.done), len(second.later)) == (1, 1)
    assert scalar("SELECT count(*) FROM notifications_notification") == 4


def test_a_cancelled_or_finished_event_is_skipped(api_key, comment_type, producer):
    done = accept(api_key, ["a"])
    event_fan_out_page(event_id=done, page=0)
    scheduled = accept(api_key, ["b"], send_at="2099-01-01T00:00:00Z")
    producer.delete(f"/api/v1/events/{scheduled}")

    outcome = events_fan_out_small(event_ids=[done, scheduled])

    assert (outcome.done, outcome.rest, outcome.later) == ([], [], [])
    assert scalar("SELECT count(*) FROM notifications_notification") == 1
