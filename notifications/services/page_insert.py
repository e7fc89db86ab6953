"""Inserting one slice of a page: its notifications, their delivery rows and
the rules that hold or skip them, in one statement (fanout_sql.page_statement).

Fan-out pages, batches of small events and digest flushes all write through
`page_insert`; `page_params` holds what every slice of one write shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from common.choices import Channel, Priority
from common.prepared import prepared_cursor
from common.rows import named_rows
from common.sqljson import from_db_json
from notifications.services import fanout_sql
from notifications.services.limits import LimitedDelivery


@dataclass
class PageWrite:
    """What inserting one slice of a page did."""

    taken: int
    last_id: int | None
    notified: list[int]
    limited: list[LimitedDelivery]
    notified_events: list[str] | None = (
        None  # the event of each notified recipient (pages of several events)
    )


def page_params(
    *,
    event_id: str,
    in_app: bool,
    channels: list[str],
    required_channels: list[str],
    type_key: str,
    category: str,
    priority: str,
    throttled: bool,
    now: datetime,
) -> dict:
    """The statement's parameters that every slice shares: the type's rules and
    the event's (or, for pages of several events, the first event's) priority.
    `channels` are the external channels; `in_app` whether notifications show."""
    return {
        "event_id": event_id,
        "visible": in_app,
        "channels": channels,
        "required": required_channels,
        "in_app_required": Channel.IN_APP in required_channels,
        "type_key": type_key,
        "category": category,
        "critical": priority == Priority.CRITICAL,
        "throttled": throttled,
        "several_events": False,
        "now": now,
    }


def page_insert(page_sql: str, shared: dict, params: dict) -> PageWrite:
    """Run the page statement over `page_sql` (a relation of recipient ids,
    and rendered titles, bodies, urls and event ids where it has them)."""
    with prepared_cursor() as cursor:
        named_rows(cursor).execute(fanout_sql.page_statement(page_sql), {**shared, **params})
        row = cursor.fetchone()
    return PageWrite(
        taken=row.taken,
        last_id=row.last_id,
        notified=list(row.notified),
        # (delivery, recipient, channel, cap, local day, event): as json_build_array built them
        limited=[LimitedDelivery(*entry) for entry in from_db_json(row.limited)],
        notified_events=row.notified_events,
    )
