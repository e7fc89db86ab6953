"""The inbox websocket against a real ASGI server, Redis channel layer and worker."""

from __future__ import annotations

import asyncio
from datetime import UTC

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from notifications.models import Recipient
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.push import notifications_created
from notifications.services.tokens import recipient_token_issue
from tests.helpers import subscribe_many, wait_for
from tests.wsclient import InboxSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]


def token_for(external_id: str, ttl: int | None = None) -> str:
    recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
    return recipient_token_issue(recipient_id=recipient.id, ttl_seconds=ttl).token


def notify(api_key, recipients: list, comment: str = "hi") -> str:
    """Accept and fan out an event in this process; pushes go out on commit."""
    body = {
        "type": "comment.created",
        "recipients": recipients,
        "actor": "ana",
        "data": {"comment": comment},
    }
    event_id = event_accept(api_key_id=api_key[0].id, body=body).id
    page = 0
    while (result := event_fan_out_page(event_id=event_id, page=page)).next_page is not None:
        page = result.next_page
    return event_id


def run(coro):
    return asyncio.run(coro)


async def in_thread(function, *args):
    """Run blocking Django code off the event loop, closing the thread's connection after."""
    from django.db import connection

    def call():
        try:
            return function(*args)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


async def close_code(server, token, origin=None) -> int:
    socket = await InboxSocket.open(server.ws_url, token, origin=origin)
    try:
        await socket.frame(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd.code
    raise AssertionError("the socket stayed open")


def test_no_token_is_closed_with_4401(asgi_server, clean_redis):
    assert run(close_code(asgi_server, None)) == 4401


def test_tampered_token_is_closed_with_4401(asgi_server, clean_redis):
    token = token_for("ana")
    assert run(close_code(asgi_server, token[:-3] + "abc")) == 4401


def test_expired_token_is_closed_with_4401(asgi_server, clean_redis):
    assert run(close_code(asgi_server, token_for("ana", ttl=-5))) == 4401


def test_foreign_origin_is_refused_at_the_handshake(asgi_server, clean_redis):
    with pytest.raises(InvalidStatus) as refused:
        run(InboxSocket.open(asgi_server.ws_url, token_for("ana"), origin="http://evil.example"))
    assert refused.value.response.status_code == 403


def test_connect_sends_the_unread_count(asgi_server, clean_redis, api_key, comment_type):
    notify(api_key, ["ana"])
    notify(api_key, ["ana"])

    token = token_for("ana")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        assert await socket.expect("unread_count") == {"type": "unread_count", "count": 2}
        await socket.send({"type": "ping"})
        assert (await socket.expect("pong"))["type"] == "pong"
        await socket.close()

    run(scenario())


def test_resume_with_another_recipients_id_is_refused(
    asgi_server, clean_redis, api_key, comment_type
):
    notify(api_key, ["bob"])
    bobs_id = str(Recipient.objects.get(external_id="bob").notification_set.get().id)

    token = token_for("ana")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.send({"type": "resume", "after": bobs_id})
        error = await socket.expect("error")
        assert error["code"] == "invalid_cursor"
        await socket.close()

    run(scenario())


def test_a_new_notification_arrives_live_and_a_token_never_shows_anothers(
    asgi_server, clean_redis, api_key, comment_type
):
    tokens = {name: token_for(name) for name in ("ana", "bob")}

    async def scenario():
        ana = await InboxSocket.open(asgi_server.ws_url, tokens["ana"])
        bob = await InboxSocket.open(asgi_server.ws_url, tokens["bob"])
        await ana.expect("unread_count")
        await bob.expect("unread_count")
        await in_thread(notify, api_key, ["ana"], "for ana")
        frame = await ana.expect("notification")
        assert frame["notification"]["body"] == "for ana"
        assert frame["unread_count"] == 1
        with pytest.raises(asyncio.TimeoutError):
            await bob.expect("notification", timeout=0.5)
        await ana.close()
        await bob.close()

    run(scenario())


def test_read_in_one_tab_updates_the_count_in_every_tab(
    asgi_server, clean_redis, api_key, comment_type
):
    notify(api_key, ["ana"])
    notify(api_key, ["ana"])
    token = token_for("ana")

    async def scenario():
        tab1 = await InboxSocket.open(asgi_server.ws_url, token)
        tab2 = await InboxSocket.open(asgi_server.ws_url, token)
        await tab1.expect("unread_count")
        await tab2.expect("unread_count")
        await tab1.send({"type": "resume", "after": None})
        await tab1.expect("resumed")
        first = sorted(tab1.items)[0]
        await tab1.send({"type": "read", "id": first})
        assert (await tab2.expect("unread_count"))["count"] == 1
        assert (await tab1.expect("unread_count"))["count"] == 1
        await tab2.send({"type": "read_all"})
        assert (await tab1.expect("unread_count"))["count"] == 0
        await tab1.close()
        await tab2.close()

    run(scenario())


def test_read_through_the_rest_api_updates_open_sockets(
    asgi_server, clean_redis, api_key, comment_type
):
    notify(api_key, ["ana"])
    token = token_for("ana")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.expect("unread_count")
        async with httpx.AsyncClient(
            base_url=asgi_server.base_url, headers={"Authorization": f"Recipient {token}"}
        ) as http:
            await http.post("/api/v1/inbox/read-all")
        assert (await socket.expect("unread_count"))["count"] == 0
        await socket.close()

    run(scenario())


def test_resume_under_concurrent_inserts_has_no_gap_and_no_duplicate(
    asgi_server, clean_redis, api_key, comment_type
):
    for n in range(30):
        notify(api_key, ["ana"], f"before {n}")

    token = token_for("ana")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.expect("unread_count")
        writer = asyncio.create_task(
            in_thread(lambda: [notify(api_key, ["ana"], f"during {n}") for n in range(30)])
        )
        await socket.send({"type": "resume", "after": None})
        await writer
        await asyncio.sleep(0)  # let the last live frames land
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (len(socket.items) < 60 or socket.resuming) and loop.time() < deadline:
            try:
                await socket.handle(await socket.frame(timeout=1))
            except TimeoutError:
                pass
        await socket.close()
        return socket

    socket = run(scenario())
    expected = {
        str(i)
        for i in Recipient.objects.get(external_id="ana").notification_set.values_list(
            "id", flat=True
        )
    }
    assert set(socket.items) == expected
    assert socket.last_id == max(expected, key=int)


def test_a_client_that_stopped_reading_recovers_every_item_through_resume(
    clean_redis, api_key, comment_type
):
    """channels-redis drops group messages over capacity: the client repairs from the database."""
    from django.conf import settings
    from django.db import connection

    from tests.servers import AsgiServer
    from tests.workers import database_url_for

    server = AsgiServer(
        database_url=database_url_for(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        extra_env={"CHANNEL_LAYER_CAPACITY": "5"},
    )
    server.start()
    token = token_for("ana")
    try:

        async def scenario():
            socket = await InboxSocket.open(server.ws_url, token)
            await socket.expect("unread_count")
            await socket.send({"type": "resume", "after": None})
            await socket.expect("resumed")
            # Not reading while 150 notifications are pushed: most are dropped.
            await in_thread(lambda: [notify(api_key, ["ana"], f"n{n}") for n in range(150)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (len(socket.items) < 150 or socket.resuming) and loop.time() < deadline:
                try:
                    await socket.handle(await socket.frame(timeout=1))
                except TimeoutError:
                    if not socket.resuming:  # nothing more is coming: ask for what is missing
                        socket.resuming = True
                        await socket.send({"type": "resume", "after": socket.last_id})
            await socket.close()
            return socket

        socket = run(scenario())
    finally:
        server.stop()
    assert len(socket.items) == 150
    assert socket.unread == 150


def test_only_connected_recipients_cost_a_channel_layer_send(
    asgi_server, clean_redis, api_key, comment_type
):
    subscribe_many("crowd", 3000, prefix="crowd")

    token = token_for("crowd-7")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.expect("unread_count")
        body = {
            "type": "comment.created",
            "recipients": [{"topic": "crowd"}],
            "data": {"comment": "x"},
        }
        event_id = await in_thread(lambda: event_accept(api_key_id=api_key[0].id, body=body).id)
        from django.conf import settings

        settings.CLARION = {**settings.CLARION, "FANOUT_PAGE_SIZE": 5000}

        def fan_out():
            from notifications.models import Notification

            # Fan out (its own push goes out on commit), then push again and count the sends.
            event_fan_out_page(event_id=event_id, page=0)
            ids = list(
                Notification.objects.filter(event_id=event_id).values_list(
                    "recipient_id", flat=True
                )
            )
            return notifications_created(event_id=event_id, recipient_ids=ids)

        sends = await in_thread(fan_out)
        frames = [await socket.expect("notification")]
        with pytest.raises(asyncio.TimeoutError):  # the second push is de-duplicated by id
            await socket.expect("notification", timeout=0.5)
        await socket.close()
        return sends, frames

    sends, frames = run(scenario())
    assert sends == 1
    assert len(frames) == 1


def test_a_posted_event_reaches_a_connected_socket_through_the_worker(
    asgi_server, worker, clean_redis, comment_type, api_key
):
    token = token_for("live-1")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.expect("unread_count")
        async with httpx.AsyncClient(
            base_url=asgi_server.base_url, headers={"Authorization": f"Bearer {api_key[1]}"}
        ) as http:
            response = await http.post(
                "/api/v1/events",
                json={
                    "type": "comment.created",
                    "recipients": ["live-1"],
                    "actor": "bo",
                    "data": {"comment": "yo"},
                },
            )
            assert response.status_code == 202
        frame = await socket.expect("notification", timeout=10)
        await socket.close()
        return frame

    frame = run(scenario())
    assert frame["notification"]["title"] == "bo commented"


def test_a_connect_burst_and_a_mass_disconnect_leave_the_server_healthy(asgi_server, clean_redis):
    from realtime import presence

    recipients = [Recipient.objects.get_or_create(external_id=f"burst-{n}")[0] for n in range(300)]
    tokens = [recipient_token_issue(recipient_id=r.id).token for r in recipients]

    async def scenario():
        sockets = await asyncio.gather(
            *(InboxSocket.open(asgi_server.ws_url, token) for token in tokens)
        )
        counts = await asyncio.gather(
            *(socket.expect("unread_count", timeout=30) for socket in sockets)
        )
        online_while_open = presence.sync_client().scard(presence.ONLINE_KEY)
        await asyncio.gather(*(socket.connection.close() for socket in sockets))
        return counts, online_while_open

    counts, online_while_open = run(scenario())
    assert len(counts) == 300 and all(frame["count"] == 0 for frame in counts)
    assert online_while_open == 300
    wait_for(
        lambda: presence.sync_client().scard(presence.ONLINE_KEY) == 0,
        timeout=20,
        what="presence to empty",
    )
    assert httpx.get(f"{asgi_server.base_url}/healthz").status_code == 200


def test_a_digest_reaches_a_connected_socket_when_its_window_is_sent(
    asgi_server, clean_redis, api_key
):
    from datetime import datetime, timedelta

    from notifications.selectors import notification_type_cache_clear
    from notifications.services.digests import digests_flush_due
    from notifications.services.types import notification_type_put

    notification_type_put(
        key="comment.created",
        body={
            "channels": ["in_app"],
            "digest": {"window_seconds": 60},
            "templates": {"in_app": {"en": {"title": "{{ digest.count }} new comments"}}},
        },
    )
    notification_type_cache_clear()
    token = token_for("dana")

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.expect("unread_count")
        await in_thread(lambda: [notify(api_key, ["dana"]) for _ in range(3)])
        with pytest.raises(asyncio.TimeoutError):
            await socket.expect("notification", timeout=0.5)
        await in_thread(lambda: digests_flush_due(now=datetime.now(UTC) + timedelta(minutes=2)))
        frame = await socket.expect("notification")
        await socket.close()
        return frame

    frame = run(scenario())
    assert frame["notification"]["title"] == "3 new comments"
    assert frame["unread_count"] == 1


def test_a_batch_of_events_reaches_a_socket_in_order(
    asgi_server, worker, clean_redis, comment_type, api_key
):
    token = token_for("batch-1")
    events = [
        {
            "type": "comment.created",
            "recipients": ["batch-1", f"other-{n}"],
            "actor": "bo",
            "data": {"comment": f"c{n}"},
        }
        for n in range(20)
    ]

    async def scenario():
        socket = await InboxSocket.open(asgi_server.ws_url, token)
        await socket.expect("unread_count")
        async with httpx.AsyncClient(
            base_url=asgi_server.base_url, headers={"Authorization": f"Bearer {api_key[1]}"}
        ) as http:
            response = await http.post("/api/v1/events/batch", json={"events": events})
            assert response.status_code == 207
        frames = [await socket.expect("notification", timeout=10) for _ in events]
        await socket.close()
        return frames

    frames = run(scenario())
    assert [frame["notification"]["body"] for frame in frames] == [f"c{n}" for n in range(20)]
    assert frames[-1]["unread_count"] == 20
