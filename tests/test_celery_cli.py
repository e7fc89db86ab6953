"""`celery -A config clarion ...` in a subprocess, against the test database
and Redis: queue depths, sweep runs (listed and run now), dead letters
(listed and replayed through the services `manage.py deliveries` uses)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from notifications.models import Delivery, SweepRun
from tests.test_metrics_cockpit import delivery_row
from tests.workers import database_url_for

pytestmark = pytest.mark.django_db(transaction=True)


def clarion(
    *args: str, input: str | None = None, redis_url: str | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for(connection.settings_dict),
        "REDIS_URL": redis_url or settings.REDIS_URL,
    }
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "clarion", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )


def dead_letters(type_) -> tuple[Delivery, Delivery, Delivery]:
    email = delivery_row(type_, "d1", "email", status="dead")
    email2 = delivery_row(type_, "d2", "email", status="dead")
    sms = delivery_row(type_, "d3", "sms", status="dead")
    return email, email2, sms


def test_queues_shows_the_depth_of_each_priority_queue(private_redis):
    # A broker of the test's own: the session's Celery worker would take
    # messages pushed to the test broker before the command counted them.
    broker = redis.Redis.from_url(private_redis.url)
    broker.rpush("normal", "m1", "m2")
    broker.rpush("critical", "m3")

    run = clarion("queues", redis_url=private_redis.url)

    assert run.returncode == 0, run.stderr
    lines = {line.split()[0]: line.split()[1] for line in run.stdout.splitlines()[1:5]}
    assert lines == {"critical": "1", "high": "0", "normal": "2", "low": "0"}
    assert "0 messages handed to workers" in run.stdout


def test_sweeps_lists_the_recent_runs_newest_first():
    now = timezone.now()
    SweepRun.objects.create(name="reminders", started_at=now - timedelta(minutes=5), duration_ms=4)
    SweepRun.objects.create(
        name="event relay", started_at=now, duration_ms=12, status="failed", error="Boom: x"
    )

    run = clarion("sweeps", "--limit", "5")

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "event relay" in lines[0] and "failed" in lines[0] and "Boom: x" in lines[0]
    assert "reminders" in lines[1]
    assert lines[-1] == "2 runs shown."


def test_sweep_run_runs_the_sweep_in_this_process_and_records_the_run(comment_type):
    due = delivery_row(comment_type, "s1", "email")
    Delivery.objects.filter(id=due.id).update(next_attempt_at=timezone.now() - timedelta(1))

    run = clarion("sweep", "run", "delivery dispatch")

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "delivery dispatch: 1"
    recorded = SweepRun.objects.get(name="delivery dispatch")
    assert (recorded.status, recorded.events_produced) == ("ok", 1)


def test_sweep_run_of_an_unknown_name_fails_naming_the_sweeps():
    run = clarion("sweep", "run", "no such sweep")

    assert run.returncode == 2
    assert "no sweep 'no such sweep'" in run.stderr and "event relay" in run.stderr
    assert not SweepRun.objects.exists()


def test_dead_list_shows_the_dead_deliveries_of_a_channel(comment_type):
    email, email2, sms = dead_letters(comment_type)

    run = clarion("dead", "list", "--channel", "email")

    assert run.returncode == 0, run.stderr
    ids = [int(line.split()[0]) for line in run.stdout.splitlines()[:-1]]
    assert ids == [email2.id, email.id]
    assert run.stdout.splitlines()[-1] == "2 shown (newest first)."


def test_dead_replay_queues_again_only_the_channel_asked_for(comment_type):
    email, email2, sms = dead_letters(comment_type)

    run = clarion("dead", "replay", "--channel", "email", "--yes")

    assert run.returncode == 0, run.stderr
    assert "2 deliveries queued again" in run.stdout
    statuses = dict(Delivery.objects.values_list("id", "status"))
    assert statuses == {email.id: "queued", email2.id: "queued", sms.id: "dead"}
    assert Delivery.objects.get(id=email.id).reason == "replay"


def test_dead_replay_by_ids_replays_just_those(comment_type):
    email, email2, sms = dead_letters(comment_type)

    run = clarion("dead", "replay", "--ids", f"{sms.id}", "--yes")

    assert run.returncode == 0, run.stderr
    statuses = dict(Delivery.objects.values_list("id", "status"))
    assert statuses == {email.id: "dead", email2.id: "dead", sms.id: "queued"}


def test_dead_replay_dry_run_only_counts(comment_type):
    dead_letters(comment_type)

    run = clarion("dead", "replay", "--dry-run")

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3 deliveries would be replayed."
    assert set(Delivery.objects.values_list("status", flat=True)) == {"dead"}


def test_dead_replay_asks_first_and_a_no_changes_nothing(comment_type):
    dead_letters(comment_type)

    run = clarion("dead", "replay", input="n\n")

    assert run.returncode == 1
    assert "Replay 3 deliveries?" in run.stderr
    assert set(Delivery.objects.values_list("status", flat=True)) == {"dead"}


def test_dead_replay_refuses_ids_that_are_not_numbers():
    run = clarion("dead", "replay", "--ids", "1,x", "--yes")

    assert run.returncode == 2
    assert "--ids" in run.stderr
