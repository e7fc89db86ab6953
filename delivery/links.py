"""Signed links that messages carry: one-click unsubscribe now, open and click
tracking later.

A link's facts travel in its token, signed with SECRET_KEY
(`django.core.signing`): nothing is stored per link, nobody can forge or
alter one, and each purpose signs with its own salt, so a token made for one
purpose (a click) is refused for another (an unsubscribe). Each purpose has
its own lifetime, read from settings when a token is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.urls import reverse

from common.choices import EXTERNAL_CHANNELS
from common.errors import ClarionError

# purpose -> the CLARION setting holding its tokens' lifetime in seconds.
MAX_AGE_SETTINGS: dict[str, str] = {
    "unsubscribe": "UNSUBSCRIBE_TOKEN_MAX_AGE_SECONDS",
    "open": "TRACKING_TOKEN_MAX_AGE_SECONDS",
    "click": "TRACKING_TOKEN_MAX_AGE_SECONDS",
}
# Ours are about a hundred characters; anything much longer is not one of them
# and is refused before any decoding.
MAX_TOKEN_CHARS = 1024
MAX_CATEGORY_CHARS = 150  # preferences' key length


class LinkInvalid(ClarionError):
    status = 400
    title = "Invalid link"


class LinkExpired(ClarionError):
    status = 410
    title = "Link expired"


def _salt(purpose: str) -> str:
    if purpose not in MAX_AGE_SETTINGS:
        raise ValueError(f"unknown link purpose {purpose!r}")
    return f"clarion.links.{purpose}"


def token_make(purpose: str, payload: dict) -> str:
    """A URL-safe token carrying `payload` (small JSON) for `purpose`."""
    return signing.dumps(payload, salt=_salt(purpose), compress=True)


def token_read(purpose: str, token: str) -> dict:
    """The payload of a token made by `token_make` for `purpose`.

    LinkInvalid for anything not signed by us for this purpose (tampered,
    truncated, another purpose's, garbage of any size or bytes), LinkExpired
    for ours once its lifetime is over."""
    salt = _salt(purpose)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise LinkInvalid("This link is not valid.")
    max_age = settings.CLARION[MAX_AGE_SETTINGS[purpose]]
    try:
        payload = signing.loads(token, salt=salt, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise LinkExpired("This link has expired.") from exc
    except (signing.BadSignature, ValueError, TypeError, UnicodeError) as exc:
        raise LinkInvalid("This link is not valid.") from exc
    if not isinstance(payload, dict):
        raise LinkInvalid("This link is not valid.")
    return payload


@dataclass(frozen=True)
class UnsubscribeLink:
    """What an unsubscribe link says: turn `channel` off for `category`."""

    delivery_id: int  # the message it came in, for the log
    recipient_id: int
    category: str
    channel: str


def unsubscribe_token(
    delivery_id: int, recipient_id: int, category: str, channel: str = "email"
) -> str:
    return token_make(
        "unsubscribe", {"d": delivery_id, "r": recipient_id, "c": category, "ch": channel}
    )


def unsubscribe_url(
    delivery_id: int, recipient_id: int, category: str, channel: str = "email"
) -> str:
    """The absolute one-click unsubscribe URL for a message (List-Unsubscribe)."""
    token = unsubscribe_token(delivery_id, recipient_id, category, channel)
    return settings.CLARION["PUBLIC_URL"] + reverse("delivery-unsubscribe", args=[token])


def unsubscribe_read(token: str) -> UnsubscribeLink:
    """The unsubscribe link a token stands for; LinkInvalid or LinkExpired."""
    payload = token_read("unsubscribe", token)
    delivery_id, recipient_id = payload.get("d"), payload.get("r")
    category, channel = payload.get("c"), payload.get("ch")
    if (
        not _is_id(delivery_id)
        or not _is_id(recipient_id)
        or not isinstance(category, str)
        or not 0 < len(category) <= MAX_CATEGORY_CHARS
        or channel not in EXTERNAL_CHANNELS
    ):
        raise LinkInvalid("This link is not valid.")
    return UnsubscribeLink(delivery_id, recipient_id, category, channel)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
