"""The log of `make run` when nothing happens: quiet.

Beat sends each periodic sweep every few seconds, and Celery logs three INFO
lines per run (Beat's "Sending due task", the worker's "received" and
"succeeded"): about 300 lines a minute with nothing going on, burying the
messages the console provider shows. Here those lines become DEBUG records,
shown only when the process runs at DEBUG (`celery ... -l debug`). Everything
else stays as it was: a sweep that did work logs it itself ("deliveries
dispatched: 3"), a failed or retried run keeps Celery's own WARNING/ERROR line,
and the other tasks (fan-out pages, sends) keep their received/succeeded lines.

Filters on Celery's own loggers, nothing deleted: `install()` adds them in the
process (clarion_dev.celery_app, the app `make run` gives its workers and Beat).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import cache

from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

BEAT_LOGGER = "celery.beat"
BEAT_SENDING = "Scheduler: Sending due task %s (%s)"
# The logger of each routine task line (Celery's format string, as it logs them).
TASK_LINES = {"celery.worker.strategy": LOG_RECEIVED, "celery.app.trace": LOG_SUCCESS}


@cache
def periodic_task_names() -> frozenset[str]:
    """The tasks Beat runs (notifications.schedules): read on the first task line, not
    at import: Celery imports the app module before Django's app registry is ready."""
    from notifications.schedules import schedules

    return frozenset(schedule.task for schedule in schedules())


class RoutineSweepLines(logging.Filter):
    """Turns a periodic sweep's routine INFO line into a DEBUG record, dropped
    unless its logger is enabled for DEBUG."""

    def __init__(self, periodic: Callable[[], frozenset[str]] = periodic_task_names) -> None:
        super().__init__()
        self.periodic = periodic

    def routine(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return False
        if record.name == BEAT_LOGGER:
            return record.msg == BEAT_SENDING
        if record.msg != TASK_LINES.get(record.name):
            return False
        context = record.args
        return isinstance(context, Mapping) and context.get("name") in self.periodic()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.routine(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install(line_filter: logging.Filter | None = None) -> logging.Filter:
    """Add the filter to the loggers that write the routine lines (once per process).

    On the loggers, not a handler: Celery's log set-up replaces handlers, and a
    logger's filters sees exactly the records logged to it.
    """
    line_filter = line_filter or RoutineSweepLines()
    for name in (BEAT_LOGGER, *TASK_LINES):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RoutineSweepLines) for f in logger.filters):
            logger.addFilter(line_filter)
    return line_filter
