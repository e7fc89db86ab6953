"""Per-recipient order: events of one priority accepted one after another reach
the recipient in that order — live, in a resume and in the inbox — with
several worker processes fanning out at once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from django.conf import settings
from django.db import connection

from notifications.models import Notification, Recipient
from notifications.services.tokens import recipient_token_issue
from tests.helpers import wait_for
from tests.workers import WorkerProcess, database_url_for
from tests.wsclient import InboxSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

EVENTS = 300
RATE = 100.0  # events per second, each POST sent after the previous 202


def inversions(sequence: list[int]) -> int:
    """Pairs (i < j) with sequence[i] > sequence[j]."""
    return sum(1 for i, a in enumerate(sequence) for b in sequence[i + 1 :] if a > b)


@pytest.fixture
def two_workers(django_db_setup, clean_redis):
    """make run's layout: an urgent and a bulk worker, several processes each."""
    workers = [
        WorkerProcess(
            database_url=database_url_for(connection.settings_dict),
            redis_url=settings.REDIS_URL,
            queues=queues,
            concurrency=concurrency,
        )
        for queues, concurrency in (("critical,high", 2), ("normal,low", 4))
    ]
    for worker in workers:
        worker.start()
    yield workers
    for worker in workers:
        worker.stop()


async def _post_sequentially(server, key: str) -> None:
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        started = time.monotonic()
        for n in range(EVENTS):
            body = {
                "type": "comment.created",
                "recipients": ["orderly"],
                "data": {"n": n, "comment": str(n)},
            }
            response = await http.post("/api/v1/events", json=body)
            assert response.status_code == 202
            await asyncio.sleep(max(0.0, started + (n + 1) / RATE - time.monotonic()))


async def _live_and_resumed(server, token: str) -> tuple[list[int], list[int]]:
    live = await InboxSocket.open(server.ws_url, token)
    await live.expect("unread_count")
    seen: list[int] = []

    async def watch() -> None:
        while len(seen) < EVENTS:
            frame = await live.frame(timeout=30)
            if frame["type"] == "notification":
                seen.append(frame["notification"]["data"]["n"])

    watcher = asyncio.create_task(watch())
    await _post_sequentially(server, await asyncio.to_thread(_api_key))
    await asyncio.wait_for(watcher, 60)

    resumed_socket = await InboxSocket.open(server.ws_url, token)
    await resumed_socket.expect("unread_count")
    await resumed_socket.send({"type": "resume", "after": "0"})
    resumed: list[int] = []
    while len(resumed) < EVENTS:
        frame = await resumed_socket.frame(timeout=30)
        if frame["type"] == "notification":
            resumed.append(frame["notification"]["data"]["n"])
    return seen, resumed


_KEY: list[str] = []


def _api_key() -> str:
    return _KEY[0]


def test_sequential_events_reach_the_recipient_in_acceptance_order(
    asgi_server, two_workers, api_key, comment_type
):
    _KEY[:] = [api_key[1]]
    recipient = Recipient.objects.create(external_id="orderly")
    token = recipient_token_issue(recipient_id=recipient.id).token

    live, resumed = asyncio.run(_live_and_resumed(asgi_server, token))
    wait_for(
        lambda: Notification.objects.filter(recipient=recipient).count() == EVENTS,
        what="every notification",
    )
    inbox: list[int] = []
    cursor = None
    while True:
        page = httpx.get(
            f"{asgi_server.base_url}/api/v1/inbox",
            params={"limit": 100, **({"cursor": cursor} if cursor else {})},
            headers={"Authorization": f"Recipient {token}"},
        ).json()
        inbox.extend(item["data"]["n"] for item in page["results"])
        cursor = page["next_cursor"]
        if not cursor:
            break

    assert sorted(live) == list(range(EVENTS))
    assert (inversions(live), inversions(resumed), inversions(inbox[::-1])) == (0, 0, 0)
