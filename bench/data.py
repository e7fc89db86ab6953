"""Set-up and clean-up SQL shared by the scenarios (bench database only)."""

from __future__ import annotations

from bench.common import say
from bench.env import BenchEnv


def type_id(env: BenchEnv, key: str) -> int | None:
    with env.connect() as conn:
        row = conn.execute(
            "SELECT id FROM notifications_notificationtype WHERE key = %s", (key,)
        ).fetchone()
    return row[0] if row else None


def delete_events_of_type(
    env: BenchEnv, key: str, *, extra_where: str = "", params: tuple = ()
) -> int:
    """Delete the events of a type (and their notifications/deliveries); returns events deleted.

    The app's ForeignKeys cascade in Django, not in the database, so children go first.
    """
    tid = type_id(env, key)
    if tid is None:
        return 0
    cond = "e.type_id = %s" + (f" AND {extra_where}" if extra_where else "")
    args = (tid, *params)
    with env.connect() as conn:
        count = conn.execute(
            f"SELECT count(*) FROM notifications_event e WHERE {cond}", args
        ).fetchone()[0]
        if not count:
            return 0
        say(f"cleaning up {count:,} old '{key}' events and their notifications")
        conn.execute(
            "DELETE FROM notifications_deliveryattempt a USING notifications_delivery d,"
            f" notifications_notification n, notifications_event e"
            " WHERE a.delivery_id = d.id AND d.notification_id = n.id"
            f" AND n.event_id = e.id AND {cond}",
            args,
        )
        conn.execute(
            "DELETE FROM notifications_delivery d"
            " USING notifications_notification n, notifications_event e"
            f" WHERE d.notification_id = n.id AND n.event_id = e.id AND {cond}",
            args,
        )
        deleted = conn.execute(
            "DELETE FROM notifications_notification n USING notifications_event e"
            f" WHERE n.event_id = e.id AND {cond}",
            args,
        ).rowcount
        conn.execute(
            "DELETE FROM notifications_idempotencykey k USING notifications_event e"
            f" WHERE k.event_id = e.id AND {cond}",
            args,
        )
        conn.execute(f"DELETE FROM notifications_event e WHERE {cond}", args)
    say(f"  deleted {count:,} events, {deleted:,} notifications")
    return count


def vacuum(env: BenchEnv, *tables: str, analyze: bool = True) -> None:
    with env.connect() as conn:
        for table in tables:
            conn.execute(f"VACUUM {'(ANALYZE) ' if analyze else ''}{table}")


def queue_backlog(env: BenchEnv) -> int:
    """Messages waiting in the Celery queues (Redis lists) of the bench Redis db."""
    client = env.redis()
    total = 0
    for key in client.scan_iter(count=1000):
        if client.type(key) == b"list":
            total += client.llen(key)
    return total


def purge_queues(env: BenchEnv) -> None:
    """Drop queued Celery messages (e.g. the fan-out backlog of the previous load phase)."""
    client = env.redis()
    for key in client.scan_iter(count=1000):
        if client.type(key) == b"list":
            client.delete(key)
