"""Celery tasks of the triggers app: thin wrappers over triggers.services,
each run recorded (notifications/services/sweep_runs.py)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from notifications.services.sweep_runs import sweep_run
from triggers.services import broadcasts, escalation_sweep, reminder_sweep, saved_search_sweep

DB_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": 8,
}


@shared_task(name="clarion.triggers.saved_searches_sweep", **DB_RETRY)
def saved_searches_sweep() -> int:
    with sweep_run(saved_search_sweep.NAME) as tally:
        saved_search_sweep.saved_searches_sweep(tally)
    return tally.produced


@shared_task(name="clarion.triggers.reminders_sweep", **DB_RETRY)
def reminders_sweep() -> int:
    with sweep_run(reminder_sweep.NAME) as tally:
        reminder_sweep.reminders_sweep(tally)
    return tally.produced


@shared_task(name="clarion.triggers.escalations_sweep", **DB_RETRY)
def escalations_sweep() -> int:
    with sweep_run(escalation_sweep.NAME) as tally:
        escalation_sweep.escalations_sweep(tally)
    return tally.produced


@shared_task(name=broadcasts.TASK, **DB_RETRY)
def broadcast_fire(*, broadcast_id: int) -> str | None:
    with sweep_run("broadcasts") as tally:
        fired = broadcasts.broadcast_fire(broadcast_id=broadcast_id)
        tally.examined, tally.produced = 1, 1 if fired.event_id else 0
    return fired.event_id
