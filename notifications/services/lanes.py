"""Priority lanes: the first page of every event of one priority is written by
one transaction at a time, oldest accepted first.

Several worker processes fan out at once. Without lanes, two events accepted
one after the other for the same recipient could be written — and numbered,
and pushed — in either order. A lane is a PostgreSQL session advisory lock
per priority, held from before the page's transaction until after its
commit hooks (the websocket pushes) have run, so within a priority:

- notifications are numbered in acceptance order (the inbox and a resume
  list by number), and
- their live pushes leave in that order.

Priorities have separate lanes, so a critical event never waits behind a
normal backlog (it may overtake it). Pages after the first (topics of more
than one page) run outside the lanes, in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection

# pg_advisory_lock(class, object): the class keeps these apart from any other
# advisory locks on the database.
LANE_LOCK_CLASS = 0x636C61  # "cla"
LANE_IDS = {"critical": 1, "high": 2, "normal": 3, "low": 4}


@contextmanager
def event_lane(event_id: str) -> Iterator[str | None]:
    """The lane of an event's priority, found, then taken; yields the priority
    (None, and no lane, for an unknown event).

    Two statements, not one: a statement that reads the event table while it
    waits for the lane holds that table's lock all the while, and with a
    lane holder that waits for a lock on a table someone wants exclusively
    (a TRUNCATE between tests) PostgreSQL finds a deadlock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT priority FROM notifications_event WHERE id = %s", [event_id])
        found = cursor.fetchone()
    if found is None:
        yield None
        return
    (priority,) = found
    with priority_lane(priority):
        yield priority


@contextmanager
def priority_lane(priority: str) -> Iterator[None]:
    """Hold the priority's lane (waiting for it) around a first-page transaction.

    Must be entered outside any transaction, so that the transaction commits
    and runs its on-commit hooks before the lane is released. A worker killed
    while holding it releases it with its connection.
    """
    lane = LANE_IDS[priority]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [LANE_LOCK_CLASS, lane])
    try:
        yield
    finally:
        _unlock(lane)


def _unlock(lane: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LANE_LOCK_CLASS, lane])
    except DatabaseError:
        pass  # the connection broke: the session, and so the lock, is gone
