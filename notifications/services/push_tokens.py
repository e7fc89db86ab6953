"""A recipient's mobile push tokens (FCM, APNs): register, list, remove, prune.

The app registers its token whenever it starts (`PUT` again refreshes
`last_seen_at`); the send service reads every recipient's tokens of a batch
in one query (`push_targets`) and removes those the provider called dead in
one statement (`push_tokens_prune`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from common.errors import InvalidInput, NotFound
from common.rows import named_rows, rows_as
from notifications.models import PushToken, Recipient
from notifications.services.recipients import check_external_id, recipient_get

PLATFORMS = tuple(PushToken.Platform.values)
# Tokens are ASCII (FCM: about 160 characters of base64url and ':'; APNs: 64
# hex digits). The model allows 4096, but the unique (recipient, token) btree
# index holds at most 2704 bytes per entry: a longer token would be a 500
# from PostgreSQL, so the API stops at 2048.
TOKEN_MAX_CHARS = 2048
TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))  # printable ASCII but space
BODY_FIELDS = {"token", "platform"}


@dataclass(frozen=True)
class PushTokenRow:
    token: str
    platform: str
    created_at: datetime
    last_seen_at: datetime

    def as_json(self) -> dict:
        return {
            "token": self.token,
            "platform": self.platform,
            "created_at": self.created_at,
            "last_seen_at": self.last_seen_at,
        }


PUSH_TOKEN_COLUMNS = "token, platform, created_at, last_seen_at"


@dataclass(frozen=True)
class _Upserted(PushTokenRow):
    created: bool


def validate_token(value: object) -> str | None:
    """The problem with a device token, or None when it is one."""
    if not isinstance(value, str):
        return "Must be a string."
    if not value:
        return "Must not be empty."
    if len(value) > TOKEN_MAX_CHARS:
        return f"Must be at most {TOKEN_MAX_CHARS} characters."
    if not TOKEN_CHARS.issuperset(value):
        return "Must be printable ASCII characters without spaces."
    return None


def parse_push_token(body: object, *, need_platform: bool = True) -> tuple[str, str]:
    """(token, platform) from a request body; 422 naming every bad field."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "Expected a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    errors: dict[str, list[str]] = {
        name: ["Unknown field."] for name in sorted(set(body) - BODY_FIELDS)
    }
    token = body.get("token")
    if token is None:
        errors["token"] = ["This field is required."]
    elif problem := validate_token(token):
        errors["token"] = [problem]
    platform = body.get("platform")
    if platform is None and need_platform:
        errors["platform"] = ["This field is required."]
    elif platform is not None and (not isinstance(platform, str) or platform not in PLATFORMS):
        errors["platform"] = [f"Must be one of {', '.join(PLATFORMS)}."]
    elif platform == PushToken.Platform.APNS and not errors.get("token"):
        # APNs puts the token in the request path as the device token's hex digits.
        if any(c not in "0123456789abcdefABCDEF" for c in token):
            errors["token"] = ["An APNs device token is hexadecimal digits."]
    if errors:
        raise InvalidInput("The push token has invalid fields.", errors=errors)
    return token, platform or ""


def push_token_put(*, external_id: str, body: object) -> tuple[PushTokenRow, bool]:
    """Register a device token for a recipient (created on the fly, as events
    create them); again for the same token refreshes it. Returns (row, created)."""
    check_external_id(external_id)
    token, platform = parse_push_token(body)
    recipient, _ = Recipient.objects.get_or_create(external_id=external_id)
    with connection.cursor() as cursor:
        # `xmax = 0` only on a row this statement inserted (an update sets it).
        rows_as(cursor, _Upserted).execute(
            f"""
            INSERT INTO notifications_pushtoken
                (recipient_id, platform, token, created_at, last_seen_at)
            VALUES (%s, %s, %s, now(), now())
            ON CONFLICT (recipient_id, token)
                DO UPDATE SET platform = EXCLUDED.platform, last_seen_at = now()
            RETURNING {PUSH_TOKEN_COLUMNS}, (xmax = 0) AS created
            """,
            [recipient.id, platform, token],
        )
        row = cursor.fetchone()
    return PushTokenRow(row.token, row.platform, row.created_at, row.last_seen_at), row.created


def push_tokens_list(*, external_id: str) -> list[PushTokenRow]:
    recipient = recipient_get(external_id=external_id)
    with connection.cursor() as cursor:
        rows_as(cursor, PushTokenRow).execute(
            f"SELECT {PUSH_TOKEN_COLUMNS} FROM notifications_pushtoken"
            " WHERE recipient_id = %s ORDER BY last_seen_at DESC, id DESC",
            [recipient.id],
        )
        return cursor.fetchall()


def push_token_delete(*, external_id: str, body: object) -> None:
    """Remove one of a recipient's tokens; 404 when it has no such token."""
    check_external_id(external_id)
    token, _ = parse_push_token(body, need_platform=False)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM notifications_pushtoken p USING notifications_recipient r"
            " WHERE r.external_id = %s AND p.recipient_id = r.id AND p.token = %s",
            [external_id, token],
        )
        if cursor.rowcount == 0:
            raise NotFound(f"Recipient {external_id!r} has no such push token.")


def push_tokens_prune(pairs: Iterable[tuple[int, str]]) -> int:
    """Remove the (recipient id, token) pairs a provider called invalid, in one
    statement; returns how many were still there."""
    pairs = list(pairs)
    if not pairs:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM notifications_pushtoken p
            USING unnest(%s::bigint[], %s::text[]) AS dead(recipient_id, token)
            WHERE p.recipient_id = dead.recipient_id AND p.token = dead.token
            """,
            [[recipient_id for recipient_id, _ in pairs], [token for _, token in pairs]],
        )
        return cursor.rowcount


def push_targets(recipient_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """Every listed recipient's (platform, token) pairs, most recently seen
    first, in one query; a recipient without tokens is absent."""
    ids = list(recipient_ids)
    targets: dict[int, list[tuple[str, str]]] = {}
    if not ids:
        return targets
    with connection.cursor() as cursor:
        named_rows(cursor).execute(
            "SELECT recipient_id, platform, token FROM notifications_pushtoken"
            " WHERE recipient_id = ANY(%s::bigint[])"
            " ORDER BY recipient_id, last_seen_at DESC, id DESC",
            [ids],
        )
        for row in cursor.fetchall():
            targets.setdefault(row.recipient_id, []).append((row.platform, row.token))
    return targets
