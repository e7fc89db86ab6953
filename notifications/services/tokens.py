"""Signed recipient tokens for browsers (inbox API and websocket).

Stateless: a token names the recipient and its expiry and is signed with
SECRET_KEY. Erasing a recipient invalidates its tokens (the id is gone).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.core import signing

SALT = "clarion.recipient-token.v1"


@dataclass(frozen=True)
class RecipientToken:
    token: str
    expires_at: datetime


def recipient_token_issue(*, recipient_id: int, ttl_seconds: int | None = None) -> RecipientToken:
    ttl = ttl_seconds or settings.CLARION["RECIPIENT_TOKEN_TTL_SECONDS"]
    expires = int(time.time()) + ttl
    token = signing.dumps({"r": recipient_id, "e": expires}, salt=SALT, compress=False)
    return RecipientToken(token=token, expires_at=datetime.fromtimestamp(expires, tz=dt_timezone.utc))


def recipient_token_verify(token: str) -> int | None:
    """The recipient id of a valid, unexpired token; None otherwise."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict):
        return None
    recipient_id, expires = payload.get("r"), payload.get("e")
    if not isinstance(recipient_id, int) or not isinstance(expires, int) or expires < time.time():
        return None
    return recipient_id
