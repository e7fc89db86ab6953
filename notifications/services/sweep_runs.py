"""The record of every scheduled sweep's run (`GET /api/v1/sweeps`, admin).

A sweep wraps its work in `sweep_run(name)` and counts what it examined and
produced on the tally; the run is one row, written after the work (never
inside its transaction, so a failed run is recorded too). A sweep that
finds another run of itself in progress marks the tally `skipped`.

Sweeps run every second or two; a run that found nothing to do is recorded
at most once a minute per sweep and process (IDLE_RECORD_SECONDS), so the
table shows every run that did something, and that the idle ones are alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from notifications.models import SweepRun

log = logging.getLogger(__name__)

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
PAGE_MAX = 500
IDLE_RECORD_SECONDS = 60.0
_idle_recorded: dict[str, float] = {}


@dataclass
class SweepTally:
    examined: int = 0
    produced: int = 0
    skipped: bool = False


@contextmanager
def sweep_run(name: str) -> Iterator[SweepTally]:
    """Record one run of sweep `name`: duration, rows examined, events produced."""
    tally = SweepTally()
    started_at = timezone.now()
    started = time.perf_counter()
    error = ""
    try:
        yield tally
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        status = FAILED if error else SKIPPED if tally.skipped else OK
        _record(name, started_at, time.perf_counter() - started, tally, status, error)


def _record(
    name: str, started_at: datetime, seconds: float, tally: SweepTally, status: str, error: str
) -> None:
    level = logging.WARNING if status == FAILED else logging.DEBUG
    if status == OK and not tally.examined and not tally.produced:
        now = time.monotonic()
        if now - _idle_recorded.get(name, -IDLE_RECORD_SECONDS) < IDLE_RECORD_SECONDS:
            return
        _idle_recorded[name] = now
    log.log(
        level,
        "sweep %s %s in %.3fs: examined %d, produced %d",
        name,
        status,
        seconds,
        tally.examined,
        tally.produced,
    )
    try:
        if connection.in_atomic_block and connection.needs_rollback:
            return  # the caller's transaction failed; its rollback takes this row too
        SweepRun.objects.create(
            name=name,
            started_at=started_at,
            duration_ms=round(seconds * 1000),
            rows_examined=tally.examined,
            events_produced=tally.produced,
            status=status,
            error=error,
        )
    except DatabaseError:  # the database is why the sweep failed: the log has it
        log.warning("sweep %s: run not recorded", name, exc_info=True)


def sweep_runs_list(*, name: str | None = None, limit: int = 100) -> list[SweepRun]:
    """The most recent runs, newest first (of one sweep with `name`)."""
    runs = SweepRun.objects.order_by("-started_at", "-id")
    if name:
        runs = runs.filter(name=name)
    return list(runs[: max(1, min(limit, PAGE_MAX))])


def sweep_runs_purge() -> int:
    """Forget runs older than SWEEP_RUN_RETENTION_DAYS."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM notifications_sweeprun"
            " WHERE started_at < now() - make_interval(days => %s)",
            [settings.CLARION["SWEEP_RUN_RETENTION_DAYS"]],
        )
        return cursor.rowcount
