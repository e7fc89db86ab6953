"""During an outage of PostgreSQL or Redis every intake request is answered
within 2 s — 202 when its event is durable, else 503 with Retry-After — and
the intake is back within 2 s of the server's return. Outages are made by
cutting a TCP proxy between the ASGI server and the real server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.db import connection

from notifications.models import Event
from tests.servers import AsgiServer
from tests.tcp_proxy import TcpProxy
from tests.workers import database_url_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

ANSWER_LIMIT = 2.0
OUTAGE_SECONDS = 4.0
CLIENTS = 16
PAUSE_SECONDS = 0.02


@dataclass
class Answer:
    sent: float
    seconds: float
    status: int
    event_id: str | None
    retry_after: str | None
    outcome: str | None = None  # a 503's "outcome": not_stored | unknown


@pytest.fixture
def proxied(django_db_setup):
    db = connection.settings_dict
    postgres = TcpProxy(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432))
    redis_parts = urlsplit(settings.REDIS_URL)
    redis = TcpProxy(redis_parts.hostname, redis_parts.port or 6379)
    server = AsgiServer(
        database_url=database_url_for({**db, "HOST": "127.0.0.1", "PORT": postgres.port}),
        redis_url=f"redis://127.0.0.1:{redis.port}{redis_parts.path}",
    )
    server.start()
    yield server, {"postgres": postgres, "redis": redis}
    server.stop()
    postgres.close()
    redis.close()


async def _load(server, key: str, until: float) -> list[Answer]:
    answers: list[Answer] = []
    body = {"type": "comment.created", "recipients": ["outage"], "data": {"comment": "hi"}}

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                response = await http.post("/api/v1/events", json=body)
                status = response.status_code
                event_id = response.json().get("id") if status == 202 else None
                outcome = response.json().get("outcome") if status == 503 else None
                retry_after = response.headers.get("retry-after")
            except httpx.HTTPError:
                status, event_id, retry_after, outcome = 0, None, None, None
            answers.append(
                Answer(sent, time.monotonic() - sent, status, event_id, retry_after, outcome)
            )
            # Paced: the subject is the answers during an outage, not the tail of
            # a machine that the load, two proxies and the server saturate.
            await asyncio.sleep(0.05 if status != 202 else PAUSE_SECONDS)

    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        limits=httpx.Limits(max_connections=CLIENTS),
    ) as http:
        await asyncio.gather(*[client(http) for _ in range(CLIENTS)])
    return answers


async def _outage(proxy: TcpProxy, start: float, kind: str) -> tuple[float, float]:
    """`down`: connections reset and refused (a stopped or restarting server);
    `hang`: connections open but nothing answers (a frozen server)."""
    cut, restore = (proxy.down, proxy.up) if kind == "down" else (proxy.hang, proxy.resume)
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    down = time.monotonic()
    await asyncio.to_thread(cut)
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(restore)
    return down, time.monotonic()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@pytest.mark.parametrize(
    "service, kind",
    [("redis", "down"), ("redis", "hang"), ("postgres", "down"), ("postgres", "hang")],
)
def test_every_request_is_answered_within_2_seconds_during_an_outage(
    proxied, api_key, comment_type, service, kind
):
    server, proxies = proxied

    async def scenario():
        # A server's first requests open connections and fill caches; the
        # outage is measured from a warm server, as in production.
        warm_up = await _load(server, api_key[1], time.monotonic() + 1.5)
        begin = time.monotonic()
        load = asyncio.create_task(_load(server, api_key[1], begin + 2 + OUTAGE_SECONDS + 4))
        down, up = await _outage(proxies[service], begin + 2, kind)
        return warm_up, await load, down, up

    warm_up, answers, down, up = asyncio.run(scenario())

    during = [a.seconds for a in answers if down <= a.sent <= up]
    slowest = max(a.seconds for a in answers)
    statuses = sorted({a.status for a in answers})
    back = min(
        (a.sent + a.seconds for a in answers if a.sent > up and a.status == 202),
        default=float("inf"),
    )
    slowest_answers = [
        (round(a.sent - down, 2), round(a.seconds, 2), a.status)
        for a in sorted(answers, key=lambda a: -a.seconds)[:3]
    ]
    print(
        f"OUTAGE {service} {kind}: {len(answers)} answers, {len(during)} sent during it,"
        f" p50 {_quantile(during, 0.5) * 1000:.0f} ms, max {slowest * 1000:.0f} ms,"
        f" statuses {statuses},"
        f" outcome unknown {sum(1 for a in answers if a.outcome == 'unknown')},"
        f" back {back - up:.2f} s after the return; slowest (sent at, s, status):"
        f" {slowest_answers}"
    )
    assert slowest < ANSWER_LIMIT
    assert set(statuses) <= {202, 503}
    assert all(a.retry_after for a in answers if a.status == 503)
    assert back - up < ANSWER_LIMIT
    accepted = {a.event_id for a in warm_up + answers if a.status == 202}
    assert Event.objects.filter(id__in=accepted).count() == len(accepted)
    if kind == "hang":
        # What the deadline answered 503 "not_stored" was rolled back, not stored behind the
        # answer's back; only a COMMIT the frozen server held may or may not have landed.
        unknown = sum(1 for a in answers if a.outcome == "unknown")
        assert len(accepted) <= Event.objects.count() <= len(accepted) + unknown
