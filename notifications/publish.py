"""Publishing Celery tasks for events, after the transaction commits.

A failed publish is logged, never raised: the event row is already committed
and the relay re-publishes it, so the producer still gets its 202.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction

from config.celery import app

log = logging.getLogger(__name__)

FAN_OUT_PAGE = "clarion.events.fan_out_page"
FAN_OUT_FIRST_PAGES = "clarion.events.fan_out_first_pages"
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def publish_fan_out_page(*, event_id: str, page: int, priority: str) -> None:
    try:
        app.send_task(
            FAN_OUT_PAGE,
            kwargs={"event_id": event_id, "page": page},
            queue=priority,
            retry_policy=PUBLISH_RETRY,
        )
    except Exception:  # noqa: BLE001 - the relay recovers anything not published
        log.exception("publish failed event_id=%s page=%s; the relay will re-publish it", event_id, page)


def publish_first_pages(*, event_ids: list[str], priority: str) -> None:
    try:
        app.send_task(
            FAN_OUT_FIRST_PAGES,
            kwargs={"event_ids": event_ids},
            queue=priority,
            retry_policy=PUBLISH_RETRY,
        )
    except Exception:  # noqa: BLE001
        log.exception("publish failed for %d events; the relay will re-publish them", len(event_ids))


def on_commit_fan_out(events: Iterable[tuple[str, str]]) -> None:
    """After commit, start fan-out of (event_id, priority) pairs, one task per priority."""
    by_priority: dict[str, list[str]] = {}
    for event_id, priority in events:
        by_priority.setdefault(priority, []).append(event_id)
    if not by_priority:
        return

    def publish() -> None:
        for priority, ids in by_priority.items():
            if len(ids) == 1:
                publish_fan_out_page(event_id=ids[0], page=0, priority=priority)
            else:
                publish_first_pages(event_ids=ids, priority=priority)

    transaction.on_commit(publish)
