"""Reminders: each offset before the due time fires once; a cancel stops
what has not fired; sweeps at once, or one SIGKILLed, fire nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from notifications.models import Event
from notifications.services.sweep_runs import SweepTally
from tests.test_sweeps_exactly_once import _in_threads
from tests.workers import database_url_for
from triggers.models import Reminder, ReminderFire
from triggers.services import reminder_sweep
from triggers.services.reminders import reminder_put

DEADLINE_TYPE = {
    "category": "deadlines",
    "priority": "high",
    "channels": ["in_app"],
    "templates": {"in_app": {"en": {"title": "{{ title }} is due", "body": "soon"}}},
}


@pytest.fixture
def deadline_type(db):
    from notifications.selectors import notification_type_cache_clear
    from notifications.services.types import notification_type_put

    notification_type_cache_clear()
    return notification_type_put(key="deadline.approaching", body=DEADLINE_TYPE)[0]


def body(due_in: timedelta = timedelta(days=2), offsets=("24h", "1h"), **extra) -> dict:
    return {
        "type": "deadline.approaching",
        "recipients": ["u1", {"topic": "team:7"}],
        "due_at": (timezone.now() + due_in).isoformat(),
        "offsets": list(offsets),
        "data": {"title": "Invoice 42"},
        **extra,
    }


def come_due(*offsets: int) -> None:
    """Move the named offsets' (all, when none named) fire time into the past."""
    fires = ReminderFire.objects.filter(fired_at=None)
    if offsets:
        fires = fires.filter(offset_seconds__in=offsets)
    fires.update(fire_at=timezone.now() - timedelta(seconds=1))


def sweep() -> SweepTally:
    return reminder_sweep.reminders_sweep(SweepTally())


def reminder_events() -> list[Event]:
    return list(Event.objects.filter(type__key="deadline.approaching").order_by("id"))


@pytest.mark.django_db
def test_a_reminder_is_created_shown_replaced_and_cancelled(producer, deadline_type):
    created = producer.put("/api/v1/reminders/invoice-42", body(), format="json")
    shown = producer.get("/api/v1/reminders/invoice-42")
    replaced = producer.put("/api/v1/reminders/invoice-42", body(offsets=["2h"]), format="json")
    cancelled = producer.delete("/api/v1/reminders/invoice-42")
    again = producer.get("/api/v1/reminders/invoice-42")

    assert (created.status_code, replaced.status_code) == (201, 200)
    assert [(o["offset"], o["status"]) for o in shown.json()["offsets"]] == [
        ("1d", "pending"),
        ("1h", "pending"),
    ]
    assert [o["offset"] for o in replaced.json()["offsets"]] == ["2h"]
    assert (cancelled.status_code, again.status_code) == (204, 404)
    assert not ReminderFire.objects.exists()


@pytest.mark.django_db
def test_each_offset_fires_once_as_an_event_to_the_reminders_recipients(deadline_type):
    reminder_put(api_key_id=None, key="r1", body=body())
    come_due(86400)

    first = sweep()
    second = sweep()
    come_due()
    third = sweep()

    events = reminder_events()
    assert (first.produced, second.produced, third.produced) == (1, 0, 1)
    assert [e.data["offset_seconds"] for e in events] == [86400, 3600]
    assert events[0].recipients == {"ids": ["u1"], "topics": ["team:7"]}
    assert events[0].data["title"] == "Invoice 42" and events[0].data["reminder"] == "r1"
    assert events[0].priority == "high"


@pytest.mark.django_db
def test_an_offset_already_past_when_the_reminder_is_set_is_skipped(producer, deadline_type):
    response = producer.put(
        "/api/v1/reminders/soon", body(due_in=timedelta(minutes=30)), format="json"
    )

    assert [(o["offset"], o["status"]) for o in response.json()["offsets"]] == [
        ("1d", "skipped"),
        ("1h", "skipped"),
    ]
    assert sweep().produced == 0


@pytest.mark.django_db
def test_replacing_a_reminder_keeps_what_has_fired_fired(deadline_type):
    reminder_put(api_key_id=None, key="r1", body=body())
    come_due(86400)
    sweep()

    row, _ = reminder_put(api_key_id=None, key="r1", body=body(due_in=timedelta(days=3)))
    come_due()
    sweep()

    assert [o["status"] for o in row.offsets] == ["fired", "pending"]
    assert [e.data["offset_seconds"] for e in reminder_events()] == [86400, 3600]


@pytest.mark.django_db
def test_a_cancelled_reminder_fires_nothing_more(producer, deadline_type):
    producer.put("/api/v1/reminders/r1", body(), format="json")
    come_due(86400)
    sweep()
    producer.delete("/api/v1/reminders/r1")
    come_due()

    assert sweep().produced == 0
    assert len(reminder_events()) == 1


@pytest.mark.django_db
def test_reminder_keys_belong_to_their_api_key(producer, deadline_type):
    reminder_put(api_key_id=None, key="shared", body=body())

    assert producer.get("/api/v1/reminders/shared").status_code == 404
    assert producer.put("/api/v1/reminders/shared", body(), format="json").status_code == 201
    assert Reminder.objects.filter(key="shared").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"offsets": ["24 h"]}, "offsets"),
        ({"offsets": ["9999999h"]}, "offsets"),
        ({"offsets": ["400d"]}, "offsets"),
        ({"offsets": []}, "offsets"),
        ({"offsets": [f"{i}m" for i in range(11)]}, "offsets"),
        ({"offsets": "24h"}, "offsets"),
        ({"due_at": "next week"}, "due_at"),
        ({"due_at": "2026-12-01T10:00:00"}, "due_at"),
        ({"due_at": None}, "due_at"),
        ({"recipients": []}, "recipients"),
        ({"recipients": ["a b"]}, "recipients[0]"),
        ({"type": "no.such"}, "type"),
        ({"data": [1]}, "data"),
        ({"priority": "high"}, "priority"),
    ],
)
def test_a_bad_reminder_is_refused_naming_the_field(producer, deadline_type, changes, field):
    response = producer.put("/api/v1/reminders/r1", {**body(), **changes}, format="json")

    assert response.status_code == 422, response.content
    assert field in response.json()["errors"]
    assert not Reminder.objects.exists()


@pytest.mark.django_db
def test_a_hostile_reminder_key_is_refused(producer, deadline_type):
    long_key = producer.put(f"/api/v1/reminders/{'k' * 256}", body(), format="json")
    control = producer.put("/api/v1/reminders/a%7Fb", body(), format="json")

    assert (long_key.status_code, control.status_code) == (422, 422)


@pytest.fixture
def deadline_type_committed(transactional_db):
    from notifications.selectors import notification_type_cache_clear
    from notifications.services.types import notification_type_put

    notification_type_cache_clear()
    return notification_type_put(key="deadline.approaching", body=DEADLINE_TYPE)[0]


def _due_fires(n: int) -> None:
    """n reminders, one offset each, all due (written in SQL: the test is the sweep)."""
    reminder_put(api_key_id=None, key="template", body=body(offsets=["1h"]))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO triggers_reminder
                (api_key_id, key, type_id, recipients, data, due_at, offsets,
                 created_at, updated_at)
            SELECT NULL, 'bulk-' || g, type_id, recipients, data, due_at, offsets, now(), now()
            FROM triggers_reminder, generate_series(1, %s) g WHERE key = 'template'
            """,
            [n - 1],
        )
        cursor.execute(
            "INSERT INTO triggers_reminderfire (reminder_id, offset_seconds, fire_at)"
            " SELECT id, 3600, now() - interval '1 second' FROM triggers_reminder"
            " ON CONFLICT DO NOTHING"
        )
        cursor.execute("UPDATE triggers_reminderfire SET fire_at = now() - interval '1 second'")


def _exactly_once() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE f.fired_at IS NOT NULL),"
            " count(*) FILTER (WHERE e.id IS NULL AND f.fired_at IS NOT NULL)"
            " FROM triggers_reminderfire f LEFT JOIN notifications_event e ON e.id = f.event_id"
        )
        fired, fired_without_event = cursor.fetchone()
        cursor.execute(
            "SELECT count(*), count(DISTINCT (data->>'reminder', data->>'offset_seconds'))"
            " FROM notifications_event WHERE data ? 'reminder'"
        )
        events, distinct = cursor.fetchone()
    assert fired_without_event == 0 and events == distinct
    return fired, events


def _wait_other_sessions_gone(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'active'"
            )
            if not cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the killed sweep's session did not end")


def test_sweeps_running_together_share_the_due_offsets_and_fire_each_once(
    deadline_type_committed, settings, monkeypatch
):
    monkeypatch.setattr(reminder_sweep, "publish_on_commit", lambda rows: None)
    settings.CLARION = {**settings.CLARION, "SWEEP_REMINDER_CHUNK": 500}
    _due_fires(3000)

    results = _in_threads(lambda: sweep().produced, 3)

    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 3000
    assert _exactly_once() == (3000, 3000)


def test_a_sweep_process_sigkilled_mid_run_loses_and_doubles_nothing(
    deadline_type_committed, monkeypatch
):
    monkeypatch.setattr(reminder_sweep, "publish_on_commit", lambda rows: None)
    total = 60_000
    _due_fires(total)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for(connection.settings_dict),
        # Its fan-out publishes go nowhere (they are logged, never raised).
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "CLARION_SWEEP_REMINDER_CHUNK": "5000",
    }
    code = (
        "import django; django.setup();"
        "from notifications.services.sweep_runs import SweepTally;"
        "from triggers.services.reminder_sweep import reminders_sweep;"
        "reminders_sweep(SweepTally())"
    )
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    fired = 0
    while time.monotonic() < deadline and not fired:
        fired = ReminderFire.objects.exclude(fired_at=None).count()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    killed_at, _ = _exactly_once()
    assert 0 < killed_at < total, "the kill must land mid-run"
    # The killed client's server session runs on until it finds its socket
    # closed, holding the rows of its chunk (a sweep skips locked rows: they
    # would wait for the next run). Let it end first.
    _wait_other_sessions_gone()

    sweep()

    assert _exactly_once() == (total, total)
