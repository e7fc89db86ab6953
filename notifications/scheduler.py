"""Celery Beat's scheduler: django-celery-beat's DatabaseScheduler, made to stop promptly.

Why: Celery Beat handles SIGTERM/SIGINT inside the signal handler itself
(celery.apps.beat: `service.sync(); raise SystemExit`), and the sync writes the
schedule through the Django connection. Python runs a signal handler in the main
thread, between two bytecodes of whatever that thread was doing; Beat's main
thread spends part of every tick inside a psycopg `execute`, which holds the
connection's (non-reentrant) lock while it waits for the server. A signal
landing there made the handler's own query wait for that lock forever: Beat
ignored every further SIGTERM and only SIGKILL ended it (seen with `make run`:
Ctrl-C left Beat running).

So: the sync (and the loading of a scheduler built by the handler) is skipped
when a signal handler interrupted a query on this connection (the SystemExit
then cancels that query and Beat unwinds), and the
last sync on the way out waits at most SHUTDOWN_STATEMENT_TIMEOUT_MS (once: what
it could not write is dropped), so a locked table cannot hold the exit either. Skipping a sync only
forgets the latest `last_run_at` of a few entries; the schedules here run every
few seconds and their tasks are idempotent.
"""

from __future__ import annotations

from django.db import DatabaseError, InterfaceError, connection
from django_celery_beat.schedulers import DatabaseScheduler

# Each statement of the final sync: short enough that Beat exits well within
# the 10 s a supervisor (Compose's stop_grace_period, `make run`) allows.
SHUTDOWN_STATEMENT_TIMEOUT_MS = 2000


def connection_in_use() -> bool:
    """Whether this thread is inside a psycopg call on its Django connection (its lock is held).

    Beat uses the database from its main thread only, so a held lock seen from
    a signal handler (which runs in the main thread) means the handler interrupted
    that very call.
    """
    raw = connection.connection  # the psycopg Connection, or None before the first query
    lock = getattr(raw, "lock", None)
    return lock is not None and lock.locked()


def statement_timeout_limit(milliseconds: int) -> None:
    """Bound every later statement of this session (Beat is exiting; nothing else follows)."""
    try:
        with connection.cursor() as cursor:
            # set_config, not SET: it takes a bound parameter.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false)", [f"{milliseconds}ms"]
            )
    except (DatabaseError, InterfaceError):
        pass  # the sync that follows reports the database's state itself


class BeatScheduler(DatabaseScheduler):
    """DatabaseScheduler whose sync never re-enters a query and whose last sync is bounded."""

    def setup_schedule(self) -> None:
        # A signal that lands while the first scheduler is still loading its entries
        # makes the handler build a second one (Service.scheduler is not set yet); that
        # one is only closed, so it needs no entries.
        if connection_in_use():
            return
        super().setup_schedule()

    def sync(self) -> None:
        if connection_in_use():
            return
        super().sync()

    def close(self) -> None:
        # close() runs on the way out: in the signal handler, then in Service.start's finally.
        if connection_in_use():
            super().close()  # its sync returns at once; the finally's close writes the schedule
            return
        statement_timeout_limit(SHUTDOWN_STATEMENT_TIMEOUT_MS)
        super().close()
        # What could not be written now would only be tried again by Celery's exit-time
        # finalizer, after another timeout.
        self._dirty.clear()
