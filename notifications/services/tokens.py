"""Signed recipient tokens for browsers (inbox API and websocket).

A token names the recipient, its expiry and the instant it was issued, and is
signed with SECRET_KEY. Checking one costs a primary-key lookup: a token
authenticates only while its recipient exists (erasure ends every token) and
was issued after the recipient's `tokens_valid_after` (revocation without
erasure). Open sockets are told at once (notifications.services.push.tokens_revoked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core import signing
from django.db import connection

SALT = "clarion.recipient-token.v1"


@dataclass(frozen=True)
class RecipientToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenClaims:
    recipient_id: int
    issued_ms: int  # 0 for tokens minted before issue times were recorded


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def recipient_token_issue(*, recipient_id: int, ttl_seconds: int | None = None) -> RecipientToken:
    ttl = ttl_seconds or settings.CLARION["RECIPIENT_TOKEN_TTL_SECONDS"]
    issued = _now_ms()
    expires = issued // 1000 + ttl
    token = signing.dumps({"r": recipient_id, "e": expires, "i": issued}, salt=SALT, compress=False)
    return RecipientToken(token=token, expires_at=datetime.fromtimestamp(expires, tz=UTC))


def recipient_token_claims(token: str) -> TokenClaims | None:
    """The claims of a well-signed, unexpired token (no database); None otherwise."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict):
        return None
    recipient_id, expires, issued = payload.get("r"), payload.get("e"), payload.get("i", 0)
    if (
        not all(isinstance(value, int) for value in (recipient_id, expires, issued))
        or expires < time.time()
    ):
        return None
    return TokenClaims(recipient_id=recipient_id, issued_ms=issued)


def recipient_token_verify(token: str) -> TokenClaims | None:
    """The claims of a token that authenticates now: well signed, unexpired,
    its recipient not erased and the token not revoked."""
    claims = recipient_token_claims(token)
    if claims is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (extract(epoch FROM tokens_valid_after) * 1000)::bigint"
            " FROM notifications_recipient WHERE id = %s",
            [claims.recipient_id],
        )
        found = cursor.fetchone()
    if found is None:
        return None
    (valid_after_ms,) = found
    if valid_after_ms is not None and claims.issued_ms <= valid_after_ms:
        return None
    return claims


def recipient_tokens_revoke_before(*, recipient_id: int) -> int:
    """Revoke every token issued up to now; returns the cut-off in ms."""
    cutoff = _now_ms()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_recipient SET tokens_valid_after = to_timestamp(%s / 1000.0)"
            " WHERE id = %s",
            [cutoff, recipient_id],
        )
    return cutoff
