"""Recipient tokens die with their recipient, and can be revoked without erasing it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from notifications.models import Recipient
from notifications.services.tokens import recipient_token_issue
from tests.wsclient import InboxSocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]


def _token(producer, external_id: str) -> str:
    return producer.post(f"/api/v1/recipients/{external_id}/token").json()["token"]


def _inbox(server, token: str) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/api/v1/inbox", headers={"Authorization": f"Recipient {token}"}
    )


async def _close_code_after(server, token: str, action) -> int:
    """Open a socket with `token`, run `action` (blocking) and wait for the close."""
    socket = await InboxSocket.open(server.ws_url, token)
    assert (await socket.frame())["type"] == "unread_count"
    await asyncio.to_thread(action)
    try:
        while True:
            await socket.frame(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd.code


async def _refused_code(server, token: str) -> int:
    socket = await InboxSocket.open(server.ws_url, token)
    try:
        await socket.frame(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd.code
    raise AssertionError("the socket stayed open")


def _delete(server, api_key, path: str) -> int:
    response = httpx.delete(
        f"{server.base_url}{path}", headers={"Authorization": f"Bearer {api_key[1]}"}
    )
    return response.status_code


def test_erasing_a_recipient_ends_its_tokens_on_rest_and_websocket(
    asgi_server, api_key, producer, clean_redis
):
    token = _token(producer, "erased")
    assert _inbox(asgi_server, token).status_code == 200

    code = asyncio.run(
        _close_code_after(
            asgi_server, token, lambda: _delete(asgi_server, api_key, "/api/v1/recipients/erased")
        )
    )

    assert code == 4401
    refused = _inbox(asgi_server, token)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert asyncio.run(_refused_code(asgi_server, token)) == 4401


def test_a_recipient_created_again_under_the_same_id_does_not_revive_old_tokens(
    asgi_server, producer
):
    old = _token(producer, "reborn")
    producer.delete("/api/v1/recipients/reborn")
    producer.put("/api/v1/recipients/reborn", {"email": "r@example.com"}, format="json")

    assert _inbox(asgi_server, old).status_code == 401
    assert _inbox(asgi_server, _token(producer, "reborn")).status_code == 200


def test_revoking_tokens_ends_those_issued_before_and_keeps_the_recipient(
    asgi_server, api_key, producer, clean_redis
):
    before = _token(producer, "revoked")

    code = asyncio.run(
        _close_code_after(
            asgi_server,
            before,
            lambda: _delete(asgi_server, api_key, "/api/v1/recipients/revoked/tokens"),
        )
    )
    after = _token(producer, "revoked")

    assert code == 4401
    assert _inbox(asgi_server, before).status_code == 401
    assert _inbox(asgi_server, after).status_code == 200
    assert Recipient.objects.filter(external_id="revoked").exists()


def test_after_a_revocation_a_new_token_opens_a_socket_and_an_old_one_is_refused(
    asgi_server, api_key, producer, clean_redis
):
    async def scenario() -> dict:
        old = await asyncio.to_thread(_token, producer, "keeps")
        await asyncio.to_thread(_delete, asgi_server, api_key, "/api/v1/recipients/keeps/tokens")
        fresh = await asyncio.to_thread(_token, producer, "keeps")
        socket = await InboxSocket.open(asgi_server.ws_url, fresh)
        await socket.frame()
        assert await _refused_code(asgi_server, old) == 4401
        await socket.send({"type": "ping"})
        return await socket.frame()

    assert asyncio.run(scenario()) == {"type": "pong"}


def test_revoking_the_tokens_of_an_unknown_recipient_is_404(producer):
    response = producer.delete("/api/v1/recipients/nobody/tokens")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_a_token_minted_before_issue_times_were_recorded_still_works_until_revoked(producer):
    from django.core import signing

    from notifications.services.tokens import SALT, recipient_token_verify

    recipient = Recipient.objects.create(external_id="legacy")
    legacy = signing.dumps({"r": recipient.id, "e": 2**40}, salt=SALT, compress=False)
    assert recipient_token_verify(legacy).recipient_id == recipient.id

    producer.delete("/api/v1/recipients/legacy/tokens")

    assert recipient_token_verify(legacy) is None
    assert (
        recipient_token_verify(recipient_token_issue(recipient_id=recipient.id).token) is not None
    )
