"""Hints to open websockets that the database has something new.

The database stays the truth; these are best-effort nudges that a client can
always repair by asking for what it missed (see the Realtime contract).
"""
from __future__ import annotations

from django.db import transaction


def notifications_created_on_commit(*, event_id: str, recipient_ids: list[int]) -> None:
    """After the fan-out page commits, tell the connected recipients among these."""
    transaction.on_commit(lambda: notifications_created(event_id=event_id, recipient_ids=recipient_ids))


def notifications_created(*, event_id: str, recipient_ids: list[int]) -> None:
    # The websocket push lands with the live bell; until then the inbox API is
    # how clients learn of new items.
    return None


def unread_changed(*, recipient_id: int) -> None:
    return None


def unread_changed_on_commit(*, recipient_id: int) -> None:
    transaction.on_commit(lambda: unread_changed(recipient_id=recipient_id))
