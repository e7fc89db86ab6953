"""Publishing Celery tasks for events, after the transaction commits.

The API process does not publish one message per accepted event in the
request: a background publisher thread takes accepted ids from a queue and
publishes them in batches (one `fan_out_first_pages` message per priority per
batch). A lone event (light load) is published at once; when events arrive
together (load) the publisher lingers `CLARION_PUBLISH_LINGER_SECONDS` for
more, so batches grow and the per-message cost of publishing is shared.

A failed publish is logged, never raised: the event row is already
committed and the relay re-publishes it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable

from celery import current_app as app
from django.conf import settings
from django.db import transaction

from notifications.wakeups import wake_claim, wake_release

log = logging.getLogger(__name__)

FAN_OUT_PAGE = "clarion.events.fan_out_page"
FAN_OUT_FIRST_PAGES = "clarion.events.fan_out_first_pages"
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
MAX_BATCH = 500


def publish_fan_out_page(*, event_id: str, page: int, priority: str) -> None:
    try:
        app.send_task(
            FAN_OUT_PAGE,
            kwargs={"event_id": event_id, "page": page},
            queue=priority,
            retry_policy=PUBLISH_RETRY,
        )
    except Exception:  # noqa: BLE001 - the relay recovers anything not published
        log.exception(
            "publish failed event_id=%s page=%s; the relay will re-publish it", event_id, page
        )


def publish_first_pages(*, event_ids: list[str], priority: str, sweep: bool = False) -> bool:
    """One message for the first pages of these events; with `sweep`, its task
    also sweeps every small event of the priority still waiting. False when
    the publish failed (the relay re-publishes)."""
    if len(event_ids) == 1 and not sweep:
        publish_fan_out_page(event_id=event_ids[0], page=0, priority=priority)
        return True
    try:
        app.send_task(
            FAN_OUT_FIRST_PAGES,
            kwargs={"event_ids": event_ids, **({"sweep": priority} if sweep else {})},
            queue=priority,
            retry_policy=PUBLISH_RETRY,
        )
    except Exception:  # noqa: BLE001
        log.exception(
            "publish failed for %d events; the relay will re-publish them", len(event_ids)
        )
        return False
    return True


def publish_grouped(events: Iterable[tuple[str, str, bool]]) -> None:
    """Publish the first pages of (event_id, priority, small) triples.

    Per priority, events with topics (or otherwise not small) go in one
    message as always. Small ones (explicit recipients only) need a message
    only when none is pending for their priority (notifications.wakeups): a
    pending one's sweep takes them along."""
    by_priority: dict[str, tuple[list[str], list[str]]] = {}
    for event_id, priority, small in events:
        by_priority.setdefault(priority, ([], []))[0 if small else 1].append(event_id)
    for priority, (small_ids, other_ids) in by_priority.items():
        if other_ids:
            publish_first_pages(event_ids=other_ids, priority=priority)
        if small_ids and wake_claim(priority):
            if not publish_first_pages(event_ids=small_ids, priority=priority, sweep=True):
                wake_release(priority)


class BatchingPublisher:
    """One daemon thread per process that publishes accepted events in batches."""

    def __init__(self) -> None:
        # One item per commit: the events a transaction accepted travel together.
        self._queue: queue.Queue[list[tuple[str, str, bool]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def submit(self, events: list[tuple[str, str, bool]]) -> None:
        self._ensure_thread()
        self._queue.put(list(events))

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything submitted so far has been published (tests, shutdown)."""
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True)
        waiter.start()
        done.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                if self._pid != os.getpid():  # forked: the parent's queue and thread are not ours
                    self._queue = queue.Queue()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="clarion-publisher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        linger = settings.CLARION["PUBLISH_LINGER_SECONDS"]
        while True:
            submissions = [self._queue.get()]
            waiting = len(submissions[0])
            while waiting < MAX_BATCH:  # what is already waiting
                try:
                    submissions.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                waiting += len(submissions[-1])
            # A lone event (light load) goes out at once; when events come in
            # groups (load), wait `linger` for more to share the message.
            deadline = time.monotonic() + (linger if waiting > 1 else 0)
            while waiting < MAX_BATCH:
                remaining = deadline - time.monotonic()
                try:
                    submissions.append(
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                waiting += len(submissions[-1])
            events = [event for submission in submissions for event in submission]
            try:
                for start in range(0, len(events), MAX_BATCH):
                    publish_grouped(events[start : start + MAX_BATCH])
            except Exception:  # noqa: BLE001 - never let the thread die
                log.exception(
                    "publisher failed for %d events; the relay will re-publish them", len(events)
                )
            finally:
                for _ in submissions:
                    self._queue.task_done()


publisher = BatchingPublisher()


def on_commit_fan_out(events: list[tuple[str, str, bool]]) -> None:
    """After commit, hand (event_id, priority, small) triples to the batching
    publisher; small = explicit recipients only (no topic)."""
    if events:
        transaction.on_commit(lambda: publisher.submit(events))
