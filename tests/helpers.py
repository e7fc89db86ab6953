"""Shared test helpers: polling with a deadline, SQL shortcuts, Schemathesis runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def scalar(sql: str, params: list | tuple | None = None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()[0]


def event_row(event_id: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, fanout_page, recipient_count FROM notifications_event WHERE id = %s",
            [event_id],
        )
        status, page, count = cursor.fetchone()
    return {"status": status, "page": page, "recipient_count": count}


def subscribe_many(topic_key: str, count: int, prefix: str = "bulk") -> None:
    """Create `count` recipients subscribed to a topic, set-based."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_topic (key, created_at) VALUES (%s, now())"
            " ON CONFLICT (key) DO NOTHING",
            [topic_key],
        )
        cursor.execute(
            """
            INSERT INTO notifications_recipient
                (external_id, email, phone, locale, timezone, data, created_at, updated_at)
            SELECT %s || '-' || g, '', '', '', '', '{}', now(), now() FROM generate_series(1, %s) g
            ON CONFLICT (external_id) DO NOTHING
            """,
            [prefix, count],
        )
        cursor.execute(
            """
            INSERT INTO notifications_subscription (topic_id, recipient_id, created_at)
            SELECT (SELECT id FROM notifications_topic WHERE key = %s), r.id, now()
            FROM notifications_recipient r
            WHERE r.external_id IN (SELECT %s || '-' || g FROM generate_series(1, %s) g)
            ON CONFLICT (topic_id, recipient_id) DO NOTHING
            """,
            [topic_key, prefix, count],
        )


def run_concurrently(function: Callable[..., object], argument_lists: list[tuple]) -> None:
    """Call `function` once per argument tuple, all threads released together;
    each thread closes its own database connection."""
    import threading

    barrier = threading.Barrier(len(argument_lists))

    def run(*args) -> None:
        try:
            barrier.wait()
            function(*args)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=args) for args in argument_lists]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# A first page also reads its event's priority, takes and releases that priority's lane
# (notifications/services/lanes.py), and every page notes when it began
# (services/fanout.py, pages_started).
FIRST_PAGE_BOOKKEEPING = 4


def schemathesis_run(
    base_url: str, header: str, *, checks: str, examples: int, seed: int, extra: tuple = ()
) -> subprocess.CompletedProcess:
    """Schemathesis' CLI against a running server's /api/schema/, with `header`
    (authorization) on every request; a fixed seed so a failure reproduces."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base_url}/api/schema/",
            "-H",
            header,
            "--checks",
            checks,
            "--max-examples",
            str(examples),
            "--seed",
            str(seed),
            "--no-color",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
