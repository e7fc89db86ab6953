"""Browser push subscriptions of recipients (the W3C PushSubscription JSON).

A browser that opted in hands over `{"endpoint", "keys": {"p256dh", "auth"}}`;
the producer API and the recipient's own inbox API store it here, the web
push provider encrypts to it (RFC 8291), and the send service prunes the
endpoints a push service answered 404/410 for.

Endpoints are untrusted URLs (a recipient token is enough to register one):
only https, at most 2048 characters, no credentials, no literal private
address (http and private addresses only while WEBHOOK_ALLOW_PRIVATE is on,
for development and tests). The provider sends through the SSRF guard,
which checks the address actually connected (delivery/providers/ssrf.py).

A recipient keeps at most MAX_PER_RECIPIENT subscriptions, the most recently
registered: each is one request per notification, so a token holder cannot
make one delivery fan out without bound.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import connection, transaction

from common.errors import InvalidInput
from common.rows import rows_as
from common.webhook_urls import MAX_URL_LENGTH, private_allowed, url_problem

ENDPOINT_MAX = MAX_URL_LENGTH  # the column's size too
USER_AGENT_MAX = 255
P256DH_BYTES = 65  # an uncompressed P-256 point (RFC 8291 §3.2)
AUTH_BYTES = 16  # the authentication secret (RFC 8291 §3.2)
MAX_PER_RECIPIENT = 20
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

TABLE = "notifications_webpushsubscription"


@dataclass(frozen=True)
class SubscriptionInput:
    """A validated subscription; keys in unpadded base64url, as browsers send them."""

    endpoint: str
    p256dh: str
    auth: str
    user_agent: str = ""


@dataclass(frozen=True)
class SubscriptionRow:
    endpoint: str
    user_agent: str
    created_at: datetime
    last_seen_at: datetime

    def as_json(self) -> dict:
        return {
            "endpoint": self.endpoint,
            "user_agent": self.user_agent,
            "created_at": self.created_at,
            "last_seen_at": self.last_seen_at,
        }


SUBSCRIPTION_COLUMNS = "endpoint, user_agent, created_at, last_seen_at"


# --- validation --------------------------------------------------------------


def endpoint_problem(value: object) -> str | None:
    """Why `value` cannot be a push endpoint, or None when it can: the webhook
    address rule (`common.webhook_urls`: no literal private address, no
    localhost), and https only, without credentials or a fragment."""
    problem = url_problem(value)
    if problem:
        return problem[1]
    parts = urlsplit(value)
    if parts.scheme != "https" and not private_allowed():
        return "Must be an https URL."
    if parts.username is not None or parts.password is not None:
        return "Must not carry credentials."
    if parts.fragment:
        return "Must not have a fragment."
    return None


def _key_problem(value: object, size: int, *, point: bool = False) -> str | None:
    if not isinstance(value, str) or not value:
        return "Must be a non-empty base64url string."
    if len(value) > 200 or not _B64URL.match(value):
        return "Must be base64url (RFC 4648 §5)."
    try:
        raw = base64.urlsafe_b64decode(_padded(value))
    except (binascii.Error, ValueError):
        return "Must be base64url (RFC 4648 §5)."
    if len(raw) != size:
        return f"Must decode to {size} bytes, not {len(raw)}."
    if point:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            return "Must be an uncompressed P-256 public key."
    return None


def _padded(value: str) -> str:
    value = value.rstrip("=")
    return value + "=" * (-len(value) % 4)


def subscription_parse(body: object) -> SubscriptionInput:
    """A subscription from a request body (`PushSubscription.toJSON()`, plus an
    optional `user_agent`); InvalidInput naming every bad field. Other members
    (`expirationTime`) are ignored: browsers may add to that JSON."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "Expected a JSON object.", errors={"non_field_errors": ["Expected an object."]}
        )
    errors: dict[str, list[str]] = {}
    endpoint = body.get("endpoint")
    problem = endpoint_problem(endpoint)
    if problem:
        errors["endpoint"] = [problem]
    keys = body.get("keys")
    p256dh = auth = ""
    if not isinstance(keys, dict):
        errors["keys"] = ["Must be an object with p256dh and auth."]
    else:
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        for name, value, size, point in (
            ("p256dh", p256dh, P256DH_BYTES, True),
            ("auth", auth, AUTH_BYTES, False),
        ):
            problem = _key_problem(value, size, point=point)
            if problem:
                errors[f"keys.{name}"] = [problem]
    user_agent = body.get("user_agent", "")
    if user_agent is None:
        user_agent = ""
    if not isinstance(user_agent, str):
        errors["user_agent"] = ["Must be a string."]
    if errors:
        raise InvalidInput("The push subscription has invalid fields.", errors=errors)
    return SubscriptionInput(
        endpoint=endpoint,
        p256dh=p256dh.rstrip("="),
        auth=auth.rstrip("="),
        user_agent=_CONTROL.sub(" ", user_agent).strip()[:USER_AGENT_MAX],
    )


def endpoint_parse(body: object) -> str:
    """The endpoint of a DELETE body; any string that could be stored."""
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > ENDPOINT_MAX:
        raise InvalidInput(
            "Name the subscription's endpoint.",
            errors={"endpoint": [f"Must be a string of 1 to {ENDPOINT_MAX} characters."]},
        )
    return endpoint


# --- writes ------------------------------------------------------------------


def web_push_subscription_upsert(
    *, recipient_id: int, subscription: SubscriptionInput
) -> tuple[SubscriptionRow, bool]:
    """Store a subscription (a browser registering again replaces its keys);
    returns the row and whether it is new. Beyond MAX_PER_RECIPIENT, the
    recipient's least recently registered subscriptions are dropped."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} AS s"
            " (recipient_id, endpoint, p256dh, auth, user_agent, created_at, last_seen_at)"
            " VALUES (%s, %s, %s, %s, %s, now(), now())"
            " ON CONFLICT (recipient_id, endpoint) DO UPDATE SET p256dh = EXCLUDED.p256dh,"
            "   auth = EXCLUDED.auth, user_agent = EXCLUDED.user_agent, last_seen_at = now()"
            f" RETURNING {SUBSCRIPTION_COLUMNS}, (xmax = 0) AS created",
            [
                recipient_id,
                subscription.endpoint,
                subscription.p256dh,
                subscription.auth,
                subscription.user_agent,
            ],
        )
        *columns, created = cursor.fetchone()
        cursor.execute(
            f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE recipient_id = %s"
            "   ORDER BY last_seen_at DESC, id DESC OFFSET %s)",
            [recipient_id, MAX_PER_RECIPIENT],
        )
    return SubscriptionRow(*columns), bool(created)


def web_push_subscription_delete(*, recipient_id: int, endpoint: str) -> bool:
    """Remove one subscription; whether there was one."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {TABLE} WHERE recipient_id = %s AND endpoint = %s",
            [recipient_id, endpoint],
        )
        return cursor.rowcount > 0


def web_push_prune(pairs: list[tuple[int, str]]) -> int:
    """Remove the (recipient id, endpoint) subscriptions a push service called
    gone, in one statement; how many were removed."""
    if not pairs:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {TABLE} s USING unnest(%s::bigint[], %s::text[]) AS v(recipient_id,"
            " endpoint) WHERE s.recipient_id = v.recipient_id AND s.endpoint = v.endpoint",
            [[r for r, _ in pairs], [e for _, e in pairs]],
        )
        return cursor.rowcount


# --- reads -------------------------------------------------------------------


def web_push_subscriptions_list(*, recipient_id: int) -> list[SubscriptionRow]:
    with connection.cursor() as cursor:
        rows_as(cursor, SubscriptionRow).execute(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM {TABLE} WHERE recipient_id = %s ORDER BY id",
            [recipient_id],
        )
        return cursor.fetchall()


@dataclass(frozen=True)
class _TargetRow:
    recipient_id: int
    endpoint: str
    p256dh: str
    auth: str


def web_push_targets(recipient_ids: Iterable[int]) -> dict[int, list[str]]:
    """Each recipient's subscriptions as the JSON strings the web push provider
    takes (`{"endpoint", "keys": {"p256dh", "auth"}}`), in one query."""
    ids = sorted(set(recipient_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        rows_as(cursor, _TargetRow).execute(
            f"SELECT recipient_id, endpoint, p256dh, auth FROM {TABLE}"
            " WHERE recipient_id = ANY(%s::bigint[]) ORDER BY recipient_id, id",
            [ids],
        )
        rows = cursor.fetchall()
    targets: dict[int, list[str]] = {}
    for row in rows:
        targets.setdefault(row.recipient_id, []).append(
            json.dumps(
                {"endpoint": row.endpoint, "keys": {"p256dh": row.p256dh, "auth": row.auth}},
                separators=(",", ":"),
            )
        )
    return targets


def web_push_public_key() -> str:
    """The VAPID public key browsers subscribe with (`applicationServerKey`);
    empty when web push is not configured."""
    return (settings.CLARION.get("VAPID_PUBLIC_KEY") or "").strip()
