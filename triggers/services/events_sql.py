"""Events written by a sweep inside one SQL statement (INSERT ... SELECT),
in the form the producer API writes them (notifications/services/events.py):
accepted, explicit recipients by external id, fanned out by the normal
pipeline (preferences, caps, quiet hours, digests)."""

from __future__ import annotations

from notifications.publish import on_commit_fan_out

# The column list and the constants of a new event; a sweep's SELECT gives
# id, api_key_id, type_id, recipients, data, priority in this order.
EVENT_INSERT = """
INSERT INTO notifications_event
    (id, api_key_id, type_id, recipients, data, priority, actor, channels, send_at,
     idempotency_key, status, created_at, enqueued_at, fanout_page, fanout_source,
     fanout_cursor, recipient_count, relay_attempts)
"""
EVENT_CONSTANTS = "'', NULL, NULL, NULL, 'accepted', now(), now(), 0, 0, 0, 0, 0"


def publish_on_commit(rows: list[tuple[str, str, bool]]) -> None:
    """Hand (event id, priority, small) of the events written to fan-out once
    the sweep's transaction commits (the relay catches any publish lost)."""
    on_commit_fan_out([(str(event_id), priority, small) for event_id, priority, small in rows])
