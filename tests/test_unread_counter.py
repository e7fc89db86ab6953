"""The unread counter (notifications_unreadcount, kept by triggers): equal to
count(*) of the recipient's visible, unread, unarchived notifications after
every kind of write, under concurrent writers, and read in O(1)."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Event, Notification, Recipient
from notifications.selectors import notification_type_cache_clear, unread_count
from notifications.services import inbox
from notifications.services import push as hints
from notifications.services.digests import digests_flush_due
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.fanout_small import events_fan_out_small
from notifications.services.relay import events_relay
from notifications.services.types import notification_type_put
from preferences.services import preferences_put
from tests.conftest import inbox_client
from tests.helpers import scalar, subscribe_many

UNREAD = "n.visible AND n.read_at IS NULL AND n.archived_at IS NULL"


def mismatches() -> list[tuple]:
    """(recipient, counter, actual) wherever the counter is not count(*); empty when exact."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT coalesce(c.recipient_id, a.recipient_id), coalesce(c.count, 0), coalesce(a.n, 0)
            FROM notifications_unreadcount c
            FULL JOIN (SELECT n.recipient_id, count(*) AS n FROM notifications_notification n
                       WHERE {UNREAD} GROUP BY n.recipient_id) a ON a.recipient_id = c.recipient_id
            WHERE coalesce(c.count, 0) <> coalesce(a.n, 0)
            """
        )
        return cursor.fetchall()


def counted(external_id: str) -> int:
    return unread_count(recipient_id=Recipient.objects.get(external_id=external_id).id)


def notify(api_key, recipients: list, **extra) -> str:
    body = {
        "type": "comment.created",
        "recipients": recipients,
        "actor": "ana",
        "data": {"comment": "hi"},
        **extra,
    }
    event_id = event_accept(api_key_id=api_key[0].id, body=body).id
    page = 0
    while (result := event_fan_out_page(event_id=event_id, page=page)).next_page is not None:
        page = result.next_page
    return event_id


def ids_of(external_id: str) -> list[int]:
    rows = Notification.objects.filter(recipient__external_id=external_id).order_by("id")
    return list(rows.values_list("id", flat=True))


# --------------------------------------------------------------------------- #
# every write path
# --------------------------------------------------------------------------- #


@pytest.mark.django_db
def test_fan_out_to_a_topic_and_explicit_recipients_counts_each_notification_once(
    api_key, comment_type, settings
):
    settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 1000}
    subscribe_many("crowd", 2500, prefix="crowd")
    notify(api_key, ["ana", {"topic": "crowd"}])
    notify(api_key, [{"topic": "crowd"}, "crowd-3"])
    assert (counted("ana"), counted("crowd-3"), counted("crowd-2500")) == (1, 2, 2)
    assert mismatches() == []


@pytest.mark.django_db
def test_small_events_fanned_out_together_count_like_one_by_one(api_key, comment_type, clean_redis):
    events = [
        event_accept(
            api_key_id=api_key[0].id, body={"type": "comment.created", "recipients": rs}
        ).id
        for rs in (["ana", "bo"], ["bo"], ["ana", "cy"])
    ]
    events_fan_out_small(event_ids=events)
    assert (counted("ana"), counted("bo"), counted("cy")) == (2, 2, 1)
    assert mismatches() == []


@pytest.mark.django_db
def test_read_unread_archive_and_read_all_keep_the_count_exact(api_key, producer, comment_type):
    for _ in range(4):
        notify(api_key, ["ana", "bo"])
    client = inbox_client(producer, "ana")
    first, second, third, _ = ids_of("ana")

    def api_count() -> int:
        return client.get("/api/v1/inbox/unread-count").json()["count"]

    steps = [
        (f"/api/v1/inbox/{first}/read", 3),
        (f"/api/v1/inbox/{first}/read", 3),  # already read: no change
        (f"/api/v1/inbox/{first}/unread", 4),
        (f"/api/v1/inbox/{first}/unread", 4),
        (f"/api/v1/inbox/{second}/archive", 3),
        (f"/api/v1/inbox/{second}/read", 3),  # archived: already not counted
        (f"/api/v1/inbox/{third}/read", 2),
        (f"/api/v1/inbox/{third}/archive", 2),  # read: already not counted
        (f"/api/v1/inbox/{third}/unread", 2),  # unread but archived: still not counted
        ("/api/v1/inbox/read-all", 0),
    ]
    for path, expected in steps:
        assert client.post(path).status_code == 200, path
        assert api_count() == expected, path
        assert mismatches() == [], path
    assert counted("bo") == 4


@pytest.mark.django_db
def test_a_digest_counts_once_when_its_window_is_sent(api_key):
    notification_type_put(
        key="comment.created",
        body={
            "channels": ["in_app"],
            "digest": {"window_seconds": 60},
            "templates": {"in_app": {"en": {"title": "{{ digest.count }} new comments"}}},
        },
    )
    notification_type_cache_clear()
    for _ in range(3):
        notify(api_key, ["dana", "eli"])
    assert counted("dana") == 0
    digests_flush_due(now=datetime.now(UTC) + timedelta(minutes=2))
    assert (counted("dana"), counted("eli")) == (1, 1)
    assert mismatches() == []


@pytest.mark.django_db
def test_a_scheduled_event_counts_only_once_released_and_fanned_out(
    api_key, comment_type, clean_redis
):
    event_id = notify(api_key, ["ana"], send_at="2999-01-01T00:00:00Z")
    Recipient.objects.get_or_create(external_id="ana")
    assert counted("ana") == 0
    due = datetime.now(UTC) - timedelta(seconds=1)
    Event.objects.filter(id=event_id).update(send_at=due)
    assert events_relay() == 1
    event_fan_out_page(event_id=event_id, page=0)
    assert counted("ana") == 1
    assert mismatches() == []


@pytest.mark.django_db
def test_a_hidden_notification_counts_from_the_moment_it_is_shown(api_key, comment_type):
    ana = Recipient.objects.create(external_id="ana")
    preferences_put(recipient_id=ana.id, body={"channels": {"in_app": False}})
    notify(api_key, ["ana"])
    notify(api_key, ["ana"], channels=["email"])
    assert Notification.objects.filter(recipient=ana, visible=False).count() == 2
    assert counted("ana") == 0
    Notification.objects.filter(recipient=ana).update(visible=True)
    assert counted("ana") == 2
    Notification.objects.filter(recipient=ana).update(visible=False)
    assert counted("ana") == 0
    assert mismatches() == []


@pytest.mark.django_db
def test_erasing_a_recipient_removes_its_counter_and_leaves_the_others(
    api_key, producer, comment_type
):
    notify(api_key, ["ana", "bo"])
    ana_id = Recipient.objects.get(external_id="ana").id
    assert producer.delete("/api/v1/recipients/ana").status_code == 204
    left = scalar(
        "SELECT count(*) FROM notifications_unreadcount WHERE recipient_id = %s", [ana_id]
    )
    assert left == 0
    assert counted("bo") == 1
    assert mismatches() == []


@pytest.mark.django_db
def test_deleting_notifications_or_their_recipient_through_the_orm_keeps_counts_exact(
    api_key, comment_type
):
    first = notify(api_key, ["ana", "bo"])
    notify(api_key, ["ana", "bo"])
    Notification.objects.filter(event_id=first).delete()
    assert (counted("ana"), counted("bo")) == (1, 1)
    Recipient.objects.filter(external_id="bo").delete()
    assert scalar("SELECT count(*) FROM notifications_unreadcount") == 1
    assert mismatches() == []


@pytest.mark.django_db
def test_truncating_the_notifications_empties_the_counters(api_key, comment_type):
    notify(api_key, ["ana", "bo"])
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE notifications_notification")
    assert scalar("SELECT count(*) FROM notifications_unreadcount") == 0
    assert counted("ana") == 0


# --------------------------------------------------------------------------- #
# concurrency
# --------------------------------------------------------------------------- #


@pytest.mark.django_db(transaction=True)
def test_concurrent_inserts_reads_unreads_and_archives_leave_the_count_exact(
    api_key, comment_type, clean_redis
):
    """Fan-out threads insert for ana and bo while others mark their
    notifications read, unread and archived, read all, and un-read both
    recipients' rows in one statement (each thread its own connection): every
    counter stays exact and no statement deadlocks on the counter rows."""
    for _ in range(5):
        notify(api_key, ["ana", "bo"])
    both = Recipient.objects.filter(external_id__in=["ana", "bo"])
    recipient_ids = {r.external_id: r.id for r in both}
    errors: list[BaseException] = []
    workers = []

    def worker(work):
        def run(seed: int) -> None:
            try:
                barrier.wait()
                work(random.Random(seed))
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                errors.append(exc)
            finally:
                connection.close()

        workers.append(run)

    def insert(rng: random.Random) -> None:
        for _ in range(25):
            notify(api_key, rng.sample(["ana", "bo"], 2))

    def mark(rng: random.Random) -> None:
        for _ in range(80):
            who = recipient_ids[rng.choice(["ana", "bo"])]
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM notifications_notification WHERE recipient_id = %s"
                    " ORDER BY random() LIMIT 1",
                    [who],
                )
                (nid,) = cursor.fetchone()
            action = rng.choice(["read", "unread", "unread", "archive"])
            inbox.notification_mark(recipient_id=who, notification_id=str(nid), action=action)

    # Many-row statements from one thread only: two of them at once could
    # deadlock on the notification rows themselves, whatever the counter does.
    def many_rows(rng: random.Random) -> None:
        for _ in range(30):
            if rng.random() < 0.5:
                inbox.inbox_read_all(recipient_id=recipient_ids[rng.choice(["ana", "bo"])])
            else:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "UPDATE notifications_notification SET read_at = NULL"
                        " WHERE recipient_id = ANY(%s) AND random() < 0.3",
                        [list(recipient_ids.values())],
                    )

    worker(insert)
    worker(insert)
    worker(mark)
    worker(mark)
    worker(many_rows)
    barrier = threading.Barrier(len(workers))
    threads = [threading.Thread(target=run, args=(seed,)) for seed, run in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert Notification.objects.count() == 5 * 2 + 2 * 25 * 2
    assert mismatches() == []
    assert unread_count(recipient_id=recipient_ids["ana"]) == scalar(
        f"SELECT count(*) FROM notifications_notification n WHERE n.recipient_id = %s AND {UNREAD}",
        [recipient_ids["ana"]],
    )


# --------------------------------------------------------------------------- #
# bounded per push
# --------------------------------------------------------------------------- #

HISTORY = 60_000


def _give_history(recipient: Recipient, template_event_id: str, rows: int) -> None:
    """`rows` unread notifications for the recipient, each under its own event
    (one per (event, recipient)), set-based."""
    columns = [f.column for f in Event._meta.concrete_fields if f.column not in ("id", "status")]
    names = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH events AS (
                INSERT INTO notifications_event (id, status, {names})
                SELECT gen_random_uuid(), 'done', {names}
                FROM notifications_event, generate_series(1, %s)
                WHERE id = %s
                RETURNING id
            )
            INSERT INTO notifications_notification
                (event_id, recipient_id, title, body, url, visible, created_at)
            SELECT id, %s, 'old', '', '', true, now() FROM events
            """,
            [rows, template_event_id, recipient.id],
        )
        cursor.execute("ANALYZE notifications_notification")


def _plan(sql: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _most_rows_read(plan: dict) -> int:
    """The most rows any one node of the plan read (returned or filtered out),
    over all its loops."""
    return max(
        (
            node["Actual Rows"]
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        * node["Actual Loops"]
        for node in _nodes(plan)
    )


@pytest.mark.django_db
def test_pushes_to_a_recipient_with_60000_unread_and_to_a_quiet_one_read_a_few_rows(
    api_key, producer, comment_type, monkeypatch
):
    """heavy has 60,000 unread notifications; light's previous one is older
    than all of them. The push query and the unread-count query read a handful
    of rows for either (the statistics, after ANALYZE, see a table that is
    almost all heavy's), and the frames carry the exact counts and previous ids."""
    template = notify(api_key, ["heavy", "light"])
    heavy = Recipient.objects.get(external_id="heavy")
    light = Recipient.objects.get(external_id="light")
    _give_history(heavy, template, HISTORY)
    event_id = notify(api_key, ["heavy", "light"])

    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(hints.presence, "online_among", lambda ids: list(ids))
    monkeypatch.setattr(hints, "_send_all", sent.extend)
    with CaptureQueriesContext(connection) as pushed:
        pushes = hints.notifications_created(event_id=event_id, recipient_ids=[heavy.id, light.id])
    assert pushes == 2
    (push_sql,) = [q["sql"] for q in pushed.captured_queries]  # before a request resets the log
    frames = {group: frame for group, frame in sent}
    heavy_frame = frames[hints.group_name(heavy.id)]
    light_frame = frames[hints.group_name(light.id)]
    assert heavy_frame["unread_count"] == HISTORY + 2
    assert heavy_frame["previous_id"] == str(ids_of("heavy")[-2])
    assert light_frame["unread_count"] == 2
    assert light_frame["previous_id"] == str(ids_of("light")[0])
    answer = inbox_client(producer, "heavy").get("/api/v1/inbox/unread-count").json()
    assert answer == {"count": HISTORY + 2}

    with CaptureQueriesContext(connection) as counting:
        assert unread_count(recipient_id=heavy.id) == HISTORY + 2
    (count_sql,) = [q["sql"] for q in counting.captured_queries]

    for sql in (push_sql, count_sql):
        plan = _plan(sql)
        # No node reads a recipient's history or walks past other recipients'
        # rows, and nothing aggregates over notifications.
        assert _most_rows_read(plan) <= 5, json.dumps(plan)[:3000]
        aggregates = [node for node in _nodes(plan) if node["Node Type"] == "Aggregate"]
        assert aggregates == [], json.dumps(plan)[:3000]
        assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 100, json.dumps(plan)[:3000]
