"""Celery Beat (the Procfile's command, notifications.scheduler.BeatScheduler) exits on SIGTERM
by itself, also when the signal lands while its query waits on a lock (the reported hang:
the signal handler's own query waited forever for the connection's lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.redis_server import RedisServer
from tests.workers import database_url_for

pytestmark = [pytest.mark.pipeline]

ROOT = Path(__file__).resolve().parent.parent
BEAT_TABLES = "django_celery_beat_periodictasks, django_celery_beat_periodictask"


def beat_command() -> list[str]:
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("beat:")
    )
    return [sys.executable, "-m", *line.partition(":")[2].split()]


@pytest.fixture
def database_url(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    return database_url_for(connection.settings_dict)


class Beat:
    def __init__(self, database_url: str, broker_url: str, log_path: Path) -> None:
        self.log_path = log_path
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": broker_url,
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                beat_command(),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_ticking(self) -> None:
        deadline = time.monotonic() + 30
        while "Sending due task" not in self.log_path.read_text(errors="replace"):
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "Beat sent no task"
            time.sleep(0.05)


@pytest.fixture
def start_beat(database_url, tmp_path) -> Iterator[Callable[[], Beat]]:
    broker = RedisServer()  # Beat's messages never reach the suite's queues
    broker.start()
    started: list[Beat] = []

    def start() -> Beat:
        started.append(Beat(database_url, broker.url, tmp_path / "beat.log"))
        return started[-1]

    try:
        yield start
    finally:
        for beat in started:
            if beat.process.poll() is None:
                os.killpg(beat.process.pid, signal.SIGKILL)
                beat.process.wait(10)
        broker.stop()


def beat_query_waits_on_a_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE %s",
                ("%django_celery_beat%",),
            ).fetchone()[0]
        )


@contextmanager
def beat_tables_locked(database_url: str) -> Iterator[None]:
    with psycopg.connect(database_url) as locker:
        locker.execute(f"LOCK TABLE {BEAT_TABLES} IN ACCESS EXCLUSIVE MODE")
        yield
        locker.rollback()


def wait_for_a_query_on_the_lock(beat: Beat, database_url: str) -> None:
    deadline = time.monotonic() + 30
    while not beat_query_waits_on_a_lock(database_url):
        assert beat.process.poll() is None, "Beat exited"
        assert time.monotonic() < deadline, "Beat never queried its tables"
        time.sleep(0.05)


def exit_time(beat: Beat, limit: float = 8.0) -> float:
    started = time.monotonic()
    try:
        beat.process.wait(limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Beat still running {limit:.0f} s after SIGTERM")
    return time.monotonic() - started


# The lock stays held until Beat has exited: its last sync gives up after the
# statement timeout (2 s), so "< 5 s" leaves room for a busy machine.


def test_beat_exits_on_sigterm_while_a_tick_query_waits_on_a_lock(start_beat, database_url):
    beat = start_beat()
    beat.wait_until_ticking()
    with beat_tables_locked(database_url):
        wait_for_a_query_on_the_lock(beat, database_url)
        beat.process.send_signal(signal.SIGTERM)
        assert exit_time(beat) < 5
    assert beat.process.returncode == 0


def test_beat_exits_on_two_quick_sigterms_while_a_tick_query_waits_on_a_lock(
    start_beat, database_url
):
    # What `make run` sends: honcho signals the process group, respawn forwards it again.
    beat = start_beat()
    beat.wait_until_ticking()
    with beat_tables_locked(database_url):
        wait_for_a_query_on_the_lock(beat, database_url)
        beat.process.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        beat.process.send_signal(signal.SIGTERM)
        assert exit_time(beat) < 5
    assert beat.process.returncode == 0


def test_beat_exits_on_sigterm_while_loading_its_schedule_waits_on_a_lock(start_beat, database_url):
    with beat_tables_locked(database_url):
        beat = start_beat()
        wait_for_a_query_on_the_lock(beat, database_url)
        beat.process.send_signal(signal.SIGTERM)
        assert exit_time(beat) < 5
    assert beat.process.returncode == 0
