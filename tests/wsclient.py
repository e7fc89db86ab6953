"""A websocket inbox client that follows the protocol the way the bell does:
it tracks the last notification id it holds without a gap and resumes when a
frame's previous_id shows it missed one."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import ClientConnection, connect


class InboxSocket:
    def __init__(self, connection: ClientConnection, gap_grace: float = 0.0):
        self.connection = connection
        self.gap_grace = gap_grace
        self._grace_task: asyncio.Task | None = None
        self.items: dict[str, dict] = {}
        self.last_id: str | None = None
        self.unread: int | None = None
        self.gaps = 0
        self.pending: dict[str | None, str] = {}  # previous_id -> id, for items past last_id
        self.resuming = False

    @classmethod
    async def open(
        cls, base: str, token: str | None, *, origin: str | None = None, gap_grace: float = 0.0
    ) -> InboxSocket:
        url = f"{base}/ws/inbox/" + (f"?token={token}" if token else "")
        origin = origin or base.replace("ws://", "http://")
        return cls(await connect(url, origin=origin, open_timeout=10), gap_grace=gap_grace)

    async def send(self, frame: dict) -> None:
        await self.connection.send(json.dumps(frame))

    async def frame(self, timeout: float = 5.0) -> dict:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def expect(self, kind: str, timeout: float = 5.0) -> dict:
        """The next frame of `kind`, handling the others on the way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.frame(max(0.01, deadline - loop.time()))
            await self.handle(frame)
            if frame["type"] == kind:
                return frame

    async def handle(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "notification":
            item, previous = frame["notification"], frame.get("previous_id")
            self.unread = frame["unread_count"]
            if item["id"] in self.items:
                return
            self.items[item["id"]] = item
            self.pending[previous] = item["id"]
            self._advance()
            if (
                self.last_id is not None
                and int(item["id"]) > int(self.last_id)
                and not self.resuming
            ):
                # Something between last_id and this item has not arrived (yet).
                if self.gap_grace:
                    if self._grace_task is None or self._grace_task.done():
                        self._grace_task = asyncio.create_task(self._resume_after_grace())
                else:
                    await self._resume_now()
        elif kind == "resumed":
            # Everything up to last_id has been sent: that is the gap-free point now
            # (a live frame's previous_id can predate its predecessor's commit).
            last = frame.get("last_id")
            if last and (self.last_id is None or int(last) > int(self.last_id)):
                self.last_id = last
            self.pending = {
                prev: i for prev, i in self.pending.items() if int(i) > int(self.last_id or 0)
            }
            self._advance()
            self.resuming = False
            self.unread = frame["unread_count"]
        elif kind == "unread_count":
            self.unread = frame["count"]

    async def _resume_now(self) -> None:
        self.gaps += 1
        self.resuming = True
        await self.send({"type": "resume", "after": self.last_id})

    async def _resume_after_grace(self) -> None:
        """As the bell does: give an out-of-order frame a moment before resuming."""
        await asyncio.sleep(self.gap_grace)
        if self.pending and not self.resuming:
            await self._resume_now()

    def _advance(self) -> None:
        """Move last_id along the previous_id chain as far as it is unbroken."""
        while self.last_id in self.pending or (self.last_id is None and None in self.pending):
            self.last_id = self.pending.pop(self.last_id)

    async def close(self) -> None:
        await self.connection.close()
