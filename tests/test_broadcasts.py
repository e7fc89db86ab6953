"""Broadcasts: cron schedules in an IANA zone, kept in django-celery-beat's
tables, firing each slot once — DST-correct."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from notifications.models import Event
from tests.test_sweeps_exactly_once import _in_threads
from triggers.cron import parse_cron, parse_zone, slot_at_or_before
from triggers.models import Broadcast, BroadcastFire
from triggers.services.broadcasts import broadcast_fire, broadcast_put

NEWS = {
    "category": "news",
    "channels": ["in_app"],
    "templates": {"in_app": {"en": {"title": "Morning news", "body": "{{ slot }}"}}},
}
BODY = {
    "cron": "0 9 * * *",
    "timezone": "America/Chicago",
    "event": {"type": "news.morning", "recipients": [{"topic": "everyone"}], "data": {"n": 1}},
}
# US daylight saving time ends on 2026-11-01 at 02:00 local: 09:00 in Chicago
# is 14:00 UTC the day before and 15:00 UTC from that day on.
SATURDAY_CDT = datetime(2026, 10, 31, 14, 0, tzinfo=UTC)
SUNDAY_CST = datetime(2026, 11, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
def news_type(db):
    from notifications.selectors import notification_type_cache_clear
    from notifications.services.types import notification_type_put

    notification_type_cache_clear()
    return notification_type_put(key="news.morning", body=NEWS)[0]


def schedule_before(broadcast_key: str = "morning") -> Broadcast:
    """The broadcast as if it had been set long before the slots tested."""
    Broadcast.objects.filter(key=broadcast_key).update(updated_at=datetime(2026, 1, 1, tzinfo=UTC))
    return Broadcast.objects.get(key=broadcast_key)


@pytest.mark.django_db
def test_a_broadcast_is_kept_as_a_beat_entry_with_its_zone(producer, news_type):
    response = producer.put("/api/v1/broadcasts/morning", BODY, format="json")

    assert response.status_code == 201, response.content
    broadcast = Broadcast.objects.get(key="morning")
    task = PeriodicTask.objects.get(id=broadcast.periodic_task_id)
    assert task.task == "clarion.triggers.broadcast_fire" and task.enabled
    assert (task.crontab.hour, task.crontab.minute, str(task.crontab.timezone)) == (
        "9",
        "0",
        "America/Chicago",
    )
    next_run = datetime.fromisoformat(response.json()["next_run_at"].replace("Z", "+00:00"))
    assert next_run.astimezone(parse_zone("America/Chicago")[0]).hour == 9


@pytest.mark.django_db
def test_replacing_a_broadcast_updates_its_entry_and_delete_removes_it(producer, news_type):
    producer.put("/api/v1/broadcasts/morning", BODY, format="json")
    replaced = producer.put(
        "/api/v1/broadcasts/morning", {**BODY, "cron": "30 7 * * MON-FRI"}, format="json"
    )
    shown = producer.get("/api/v1/broadcasts/morning")
    deleted = producer.delete("/api/v1/broadcasts/morning")

    assert replaced.status_code == 200 and shown.json()["cron"] == "30 7 * * MON-FRI"
    assert PeriodicTask.objects.filter(task="clarion.triggers.broadcast_fire").count() == 0
    assert deleted.status_code == 204
    assert producer.get("/api/v1/broadcasts/morning").status_code == 404


def test_the_slot_of_nine_in_chicago_follows_the_dst_change():
    cron, _ = parse_cron("0 9 * * *")
    zone, _ = parse_zone("America/Chicago")

    before = slot_at_or_before(cron, zone, SATURDAY_CDT + timedelta(minutes=3))
    on_the_day_early = slot_at_or_before(cron, zone, SUNDAY_CST - timedelta(minutes=1))
    after = slot_at_or_before(cron, zone, SUNDAY_CST + timedelta(seconds=5))

    assert before == SATURDAY_CDT
    assert on_the_day_early == SATURDAY_CDT  # 14:59 UTC on Sunday is 08:59 CST
    assert after == SUNDAY_CST


@pytest.mark.django_db
def test_celery_beat_finds_the_entry_due_at_nine_local_on_each_side_of_the_change(news_type):
    broadcast_put(api_key_id=None, key="morning", body=BODY)
    entry = CrontabSchedule.objects.get(hour="9", timezone="America/Chicago").schedule

    def due(at: datetime, last_run: datetime) -> bool:
        entry.nowfun = lambda: at.astimezone(entry.tz)
        return entry.is_due(last_run)[0]

    assert due(SATURDAY_CDT + timedelta(seconds=5), SATURDAY_CDT - timedelta(days=1))
    assert not due(SUNDAY_CST - timedelta(minutes=1), SATURDAY_CDT)
    assert not due(SUNDAY_CST - timedelta(hours=1), SATURDAY_CDT)  # 09:00 CDT would be this
    assert due(SUNDAY_CST + timedelta(seconds=5), SATURDAY_CDT)


@pytest.mark.django_db
def test_each_slot_fires_once_on_each_side_of_the_dst_change(news_type):
    broadcast_put(api_key_id=None, key="morning", body=BODY)
    broadcast = schedule_before()

    fired = [
        broadcast_fire(broadcast_id=broadcast.id, now=SATURDAY_CDT + timedelta(seconds=2)),
        broadcast_fire(broadcast_id=broadcast.id, now=SATURDAY_CDT + timedelta(minutes=5)),
        broadcast_fire(broadcast_id=broadcast.id, now=SUNDAY_CST + timedelta(seconds=2)),
        broadcast_fire(broadcast_id=broadcast.id, now=SUNDAY_CST + timedelta(seconds=30)),
    ]

    assert [f.event_id is not None for f in fired] == [True, False, True, False]
    assert list(BroadcastFire.objects.order_by("slot").values_list("slot", flat=True)) == [
        SATURDAY_CDT,
        SUNDAY_CST,
    ]
    events = Event.objects.filter(type__key="news.morning").order_by("id")
    assert [e.data["slot"] for e in events] == [SATURDAY_CDT.isoformat(), SUNDAY_CST.isoformat()]
    assert events[0].recipients == {"ids": [], "topics": ["everyone"]}


@pytest.mark.django_db
def test_a_slot_before_the_broadcast_was_set_is_not_fired(news_type):
    broadcast, _ = broadcast_put(api_key_id=None, key="morning", body=BODY)

    fired = broadcast_fire(broadcast_id=Broadcast.objects.get(key="morning").id, now=SATURDAY_CDT)

    assert fired.event_id is None and not Event.objects.exists()


@pytest.fixture
def news_type_committed(transactional_db):
    from notifications.selectors import notification_type_cache_clear
    from notifications.services.types import notification_type_put

    notification_type_cache_clear()
    return notification_type_put(key="news.morning", body=NEWS)[0]


def test_two_beat_runs_of_the_same_slot_at_once_fire_it_once(news_type_committed):
    broadcast_put(api_key_id=None, key="morning", body=BODY)
    broadcast = schedule_before()

    results = _in_threads(
        lambda: broadcast_fire(broadcast_id=broadcast.id, now=SATURDAY_CDT).event_id, 4
    )

    assert sum(1 for r in results if isinstance(r, str)) == 1, results
    assert Event.objects.filter(type__key="news.morning").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "0 9 * *"}, "cron"),
        ({"cron": "61 9 * * *"}, "cron"),
        ({"cron": "*/0 * * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": 9}, "cron"),
        ({"cron": "0 " * 200}, "cron"),
        ({"timezone": "America/Gotham"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"event": None}, "event"),
        ({"event": {**BODY["event"], "send_at": "2026-12-01T00:00:00Z"}}, "event.send_at"),
        ({"event": {**BODY["event"], "recipients": []}}, "event.recipients"),
        ({"event": {**BODY["event"], "type": "no.such"}}, "event.type"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_broadcast_is_refused_naming_the_field(producer, news_type, changes, field):
    response = producer.put("/api/v1/broadcasts/b1", {**BODY, **changes}, format="json")

    assert response.status_code == 422, response.content
    assert field in response.json()["errors"], response.json()["errors"]
    assert (
        not Broadcast.objects.exists()
        and not PeriodicTask.objects.filter(task="clarion.triggers.broadcast_fire").exists()
    )
