"""Exactly-once sweeps: rows, not timing. Two sweeps at once, a sweep whose
process is SIGKILLed mid-transaction, and two Beat-started runs together
each leave one event per (trigger, item)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, connections

from notifications.models import Event
from tests.test_saved_searches import load, put_items, watch
from tests.workers import database_url_for
from triggers.models import TriggerFire
from triggers.services import saved_search_sweep
from triggers.services.items import committed_position

MATCHING = {"origin": "Dallas, TX", "equipment": "van", "rate": 2.5}


@pytest.fixture
def load_type(transactional_db):
    from notifications.selectors import notification_type_cache_clear
    from notifications.services.types import notification_type_put
    from tests.test_saved_searches import LOAD_TYPE

    notification_type_cache_clear()
    return notification_type_put(key="load.match", body=LOAD_TYPE)[0]


def _in_threads(target, n: int = 2) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_sweeps_over_the_same_chunk_at_once_fire_each_match_once(load_type):
    for i in range(20):
        watch(f"c{i}")
    put_items(*(load(f"L{i}", **MATCHING) for i in range(30)))
    upto = committed_position()

    # Straight to the chunk, past the sweep lock: the unique rows alone decide.
    results = _in_threads(lambda: saved_search_sweep._sweep_chunk(0, upto, 10_000)[0].events, 4)

    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 600
    assert Event.objects.filter(type__key="load.match").count() == 600
    assert TriggerFire.objects.count() == 600


def test_a_second_run_started_while_one_holds_the_sweep_is_skipped(load_type):
    from notifications.services.sweep_runs import SweepTally
    from triggers.services.sweep_locks import sweep_lock

    with sweep_lock(saved_search_sweep.NAME) as held:
        assert held
        [tally] = _in_threads(lambda: saved_search_sweep.saved_searches_sweep(SweepTally()), 1)

    assert tally.skipped


def _sweep_in_a_process() -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for(connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    code = (
        "import django; django.setup();"
        "from notifications.services.sweep_runs import SweepTally;"
        "from triggers.services.saved_search_sweep import saved_searches_sweep;"
        "print(saved_searches_sweep(SweepTally()), flush=True)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_for_lock_wait(timeout: float = 30.0) -> None:
    """Until some session waits on a lock (the sweep's INSERT of a fire we hold)."""
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                # (pg_stat_activity keeps only the statement's first 1 KiB.)
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event = 'transactionid' AND query LIKE '%%WITH chunk AS%%'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the sweep never reached its insert")


def _wait_blocked(process: subprocess.Popen) -> None:
    try:
        _wait_for_lock_wait()
    except AssertionError:
        process.kill()
        out, err = process.communicate(10)
        raise AssertionError(f"sweep process: {out!r} {err.decode()[-2000:]}") from None


def test_a_sweep_killed_mid_transaction_leaves_nothing_and_the_next_fires_once(load_type):
    watch("c1")
    put_items(load("L1", **MATCHING))
    from triggers.models import Item, Trigger

    trigger = Trigger.objects.get()
    item = Item.objects.get()
    # Hold the fire's unique key in an open transaction of our own, so the
    # sweep process blocks inside its transaction; then kill it there.
    blocker = connections.create_connection("default")
    blocker.connect()
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute(
            "INSERT INTO triggers_triggerfire (trigger_id, item_id, item_version, event_id,"
            " fired_at) VALUES (%s, %s, 0, gen_random_uuid(), now())",
            [trigger.id, item.id],
        )
    process = _sweep_in_a_process()
    try:
        _wait_blocked(process)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        blocker.rollback()
        blocker.close()
    assert process.returncode == -signal.SIGKILL
    assert not Event.objects.filter(type__key="load.match").exists()

    from notifications.services.sweep_runs import SweepTally

    tally = saved_search_sweep.saved_searches_sweep(SweepTally())

    assert tally.produced == 1
    assert Event.objects.filter(type__key="load.match").count() == 1
    assert TriggerFire.objects.count() == 1
