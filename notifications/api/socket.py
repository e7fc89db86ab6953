"""The inbox websocket (`/ws/inbox/`), per the Realtime contract.

The database is the truth; the socket is a fast hint. Every notification
frame carries `previous_id` (the recipient's notification before it) so a
client that missed one notices and sends `resume`; the server answers from
the database and de-duplicates live frames by id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from common.errors import ClarionError
from notifications.models import Notification, Recipient
from notifications.selectors import unread_count
from notifications.services import inbox
from notifications.services.push import group_name, json_safe
from notifications.services.tokens import recipient_token_verify
from realtime import presence
from realtime.layers import dispatch_batch

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
RESUME_PAGE = 500
REMEMBERED_IDS = 2000
# Redis work of connects and disconnects in flight at once per process: a burst
# of thousands of handshakes or closes waits here instead of asking the Redis
# pools for more connections than they hold.
REDIS_CONCURRENCY = 100
_redis_slots: asyncio.Semaphore | None = None


def redis_slots() -> asyncio.Semaphore:
    global _redis_slots
    if _redis_slots is None:
        _redis_slots = asyncio.Semaphore(REDIS_CONCURRENCY)
    return _redis_slots


# channels-redis forgets a group member after its group_expiry (a day); a
# long-lived socket re-joins its group well before that.
GROUP_REJOIN_SECONDS = 3600


@database_sync_to_async
def _recipient_for_user(user) -> int | None:
    return Recipient.objects.filter(user=user).values_list("id", flat=True).first()


_verify_token = database_sync_to_async(recipient_token_verify)


@database_sync_to_async
def _unread(recipient_id: int) -> int:
    return unread_count(recipient_id=recipient_id)


@database_sync_to_async
def _owns(recipient_id: int, notification_id: int) -> bool:
    return Notification.objects.filter(id=notification_id, recipient_id=recipient_id).exists()


@database_sync_to_async
def _items_after(recipient_id: int, after_id: int) -> list[dict]:
    return [
        json_safe(item)
        for item in inbox.inbox_items_after(
            recipient_id=recipient_id, after_id=after_id, limit=RESUME_PAGE
        )
    ]


@database_sync_to_async
def _mark(recipient_id: int, notification_id: str) -> None:
    inbox.notification_mark(
        recipient_id=recipient_id, notification_id=notification_id, action="read"
    )


@database_sync_to_async
def _read_all(recipient_id: int) -> None:
    inbox.inbox_read_all(recipient_id=recipient_id)


class InboxConsumer(AsyncJsonWebsocketConsumer):
    recipient_id: int | None = None
    # When the socket authenticated by token: its issue time (revocation
    # closes sockets of older tokens); None for a linked session.
    token_issued_ms: int | None = None
    # Ids already sent (for de-duplication), made on the first send: most
    # sockets sit idle, and these are ~0.8 KB of a ~40 KB connection.
    sent_ids: deque[str] | None = None
    sent_set: set[str] | None = None

    async def connect(self) -> None:
        self.recipient_id = await self._authenticate()
        if self.recipient_id is None:
            # Accept, then close with the contract's code so browsers can see why.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.group = group_name(self.recipient_id)
        async with redis_slots():
            await self.channel_layer.group_add(self.group, self.channel_name)
            await presence.connection_opened(
                recipient_id=self.recipient_id, channel_name=self.channel_name
            )
        self.joined_at = time.monotonic()
        await self.accept()
        await self.send_json({"type": "unread_count", "count": await _unread(self.recipient_id)})

    async def _authenticate(self) -> int | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [None])[0]
        if token:
            claims = await _verify_token(token)
            if claims is None:
                return None
            self.token_issued_ms = claims.issued_ms
            return claims.recipient_id
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return await _recipient_for_user(user)
        return None

    async def disconnect(self, code: int) -> None:
        if self.recipient_id is None or not hasattr(self, "group"):
            return
        async with redis_slots():
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await presence.connection_closed(
                recipient_id=self.recipient_id, channel_name=self.channel_name
            )

    # --- client → server -------------------------------------------------
    async def receive_json(self, content, **kwargs) -> None:
        if self.recipient_id is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        await presence.connection_refreshed(
            recipient_id=self.recipient_id, channel_name=self.channel_name
        )
        if time.monotonic() - self.joined_at > GROUP_REJOIN_SECONDS:
            await self.channel_layer.group_add(self.group, self.channel_name)
            self.joined_at = time.monotonic()
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "resume":
            await self._resume(content.get("after"))
        elif kind == "read":
            try:
                await _mark(self.recipient_id, str(content.get("id")))
            except ClarionError:
                await self._error("not_found", "No such notification.")
        elif kind == "read_all":
            await _read_all(self.recipient_id)
        else:
            await self._error("bad_request", "Unknown frame type.")

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)
        except ValueError:
            await self._error("bad_request", "Frames must be JSON objects.")

    async def _error(self, code: str, detail: str) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail})

    async def _resume(self, after) -> None:
        after_id = await self._parse_after(after)
        if after_id is None:
            await self._error(
                "invalid_cursor", "`after` must be one of your notification ids or inbox cursors."
            )
            return
        count = await _unread(self.recipient_id)
        previous = str(after_id) if after_id else None
        while True:
            items = await _items_after(self.recipient_id, after_id)
            for item in items:
                await self._send_notification(item, previous, count)
                previous = item["id"]
            if len(items) < RESUME_PAGE:
                break
            after_id = int(items[-1]["id"])
        await self.send_json({"type": "resumed", "last_id": previous, "unread_count": count})

    async def _parse_after(self, after) -> int | None:
        if after in (None, "", 0, "0"):
            return 0
        if isinstance(after, int) or (isinstance(after, str) and after.isdigit()):
            value = int(after)
            if 0 < value < 2**63 and await _owns(self.recipient_id, value):
                return value
            return None
        if isinstance(after, str):
            try:
                return inbox.cursor_decode(recipient_id=self.recipient_id, cursor=after)
            except ClarionError:
                return None
        return None

    async def _send_notification(self, item: dict, previous_id: str | None, count: int) -> None:
        if self.sent_ids is None:
            self.sent_ids, self.sent_set = deque(maxlen=REMEMBERED_IDS), set()
        if item["id"] in self.sent_set:
            return
        if len(self.sent_ids) == self.sent_ids.maxlen:
            self.sent_set.discard(self.sent_ids[0])
        self.sent_ids.append(item["id"])
        self.sent_set.add(item["id"])
        await self.send_json(
            {
                "type": "notification",
                "notification": item,
                "previous_id": previous_id,
                "unread_count": count,
            }
        )

    # --- channel layer → client -------------------------------------------
    async def inbox_notification(self, message: dict) -> None:
        await self._send_notification(
            message["notification"], message.get("previous_id"), message["unread_count"]
        )

    async def layer_batch(self, message: dict) -> None:
        await dispatch_batch(self, message)  # many groups' messages in one (realtime/layers.py)

    async def inbox_revoked(self, message: dict) -> None:
        """The recipient was erased, or tokens up to `before_ms` were revoked."""
        ended = message["erased"] or (
            self.token_issued_ms is not None and self.token_issued_ms <= message["before_ms"]
        )
        if ended:
            await self.close(code=CLOSE_UNAUTHORIZED)

    async def inbox_unread(self, message: dict) -> None:
        await self.send_json({"type": "unread_count", "count": message["count"]})
