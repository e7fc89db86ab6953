"""Celery tasks: thin wrappers over the services; they take ids and are idempotent."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
from django.db import InterfaceError, OperationalError, connection

from notifications.publish import publish_fan_out_page, publish_first_pages
from notifications.services.digests import digests_flush_due
from notifications.services.fanout import event_fan_out_page
from notifications.services.fanout_small import events_fan_out_small
from notifications.services.relay import events_relay, idempotency_keys_purge
from notifications.services.sweep_runs import sweep_run, sweep_runs_purge
from notifications.wakeups import wake_release

log = logging.getLogger(__name__)


@contextmanager
def _reconnect_on_retry() -> Iterator[None]:
    """A connection the server cut (restart, pg_terminate_backend) is dropped
    before the retry: Celery's own check between tasks may leave a closed
    psycopg connection in place, and every retry then fails on it."""
    try:
        yield
    except (OperationalError, InterfaceError):
        connection.close()
        raise


DB_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": 8,
}


def _run_page(event_id: str, page: int) -> None:
    result = event_fan_out_page(event_id=event_id, page=page)
    if result.ran:
        log.info(
            "fan-out page done event_id=%s page=%s inserted=%s done=%s",
            event_id,
            page,
            result.inserted,
            result.done,
        )
    if result.next_page is not None:
        # The page committed; publish the next one. If this publish is lost the
        # relay re-publishes it from the recorded progress.
        publish_fan_out_page(event_id=event_id, page=result.next_page, priority=result.priority)


@shared_task(name="clarion.events.fan_out_page", **DB_RETRY)
def fan_out_page(*, event_id: str, page: int) -> None:
    with _reconnect_on_retry():
        if page == 0:
            _run_first_pages([event_id])  # a lone small event joins its lane's batch
        else:
            _run_page(event_id, page)


@shared_task(name="clarion.events.fan_out_first_pages", **DB_RETRY)
def fan_out_first_pages(*, event_ids: list[str], sweep: str | None = None) -> None:
    """First page of each event of an accepted batch: one message for many
    events. The small ones (explicit recipients only) are written together;
    the rest one by one. `sweep`: a wake-up (notifications.wakeups) for that
    priority, whose small events waiting may have no message of their own."""
    with _reconnect_on_retry():
        _run_first_pages(event_ids, sweep=sweep)


# A task that keeps finding new small events sweeps again for this long, then
# hands its wake-up to a new message (behind whatever else waits in the queue).
SWEEP_TASK_SECONDS = 2.0


def _run_first_pages(event_ids: list[str], sweep: str | None = None) -> None:
    pending = event_ids
    started = time.monotonic()
    while pending or sweep:
        outcome = events_fan_out_small(event_ids=pending, sweep=sweep)
        for event_id in outcome.rest:
            _run_page(event_id, 0)
        pending = outcome.later
        if outcome.sweep_again and not pending and time.monotonic() - started > SWEEP_TASK_SECONDS:
            # It holds the wake-up key: publish the message that goes with it.
            if not publish_first_pages(event_ids=[], priority=sweep, sweep=True):
                wake_release(sweep)
            return
        # A full sweep may have left small events waiting that no message
        # names, and events may have come in while it ran (it kept their
        # wake-up): sweep again until neither.
        sweep = sweep if outcome.sweep_full or outcome.sweep_again else None


@shared_task(name="clarion.events.relay")
def relay() -> int:
    # Releases due send_at events and re-publishes stale ones.
    with sweep_run("event relay") as tally:
        tally.examined = tally.produced = events_relay()
    return tally.produced


@shared_task(name="clarion.maintenance.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    sweep_runs_purge()
    return idempotency_keys_purge()


@shared_task(name="clarion.digests.flush_due", **DB_RETRY)
def flush_due_digests() -> int:
    with _reconnect_on_retry(), sweep_run("digest flush") as tally:
        tally.examined = tally.produced = digests_flush_due()
    return tally.produced
