"""Authentication: producer API keys (`Bearer`) and recipient tokens (`Recipient`)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

from notifications.models import ApiKey
from notifications.rates import Rate, default_rate, rate_parse

log = logging.getLogger(__name__)

KEY_PREFIX = "clk_"
CACHE_SECONDS = 30.0
WWW_AUTHENTICATE = 'Bearer realm="clarion"'


@dataclass(frozen=True)
class Producer:
    """request.user for producer calls."""

    api_key_id: int
    name: str
    own_rate: Rate | None = None
    is_authenticated: bool = True

    @property
    def rate(self) -> Rate | None:
        """The key's own rate limit, else CLARION_API_RATE_LIMIT (None: unlimited)."""
        return self.own_rate or default_rate()


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, name: str, rate_limit: str = "") -> tuple[ApiKey, str]:
    """Create a key; the raw key is returned once and never stored. `rate_limit`
    is "N/s", "N/m" or "N/h" (ValueError otherwise), or empty for the default."""
    rate = str(rate_parse(rate_limit)) if rate_limit.strip() else ""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name, prefix=raw[:12], key_hash=hash_api_key(raw), rate_limit=rate
    )
    return key, raw


_cache: dict[str, tuple[float, Producer]] = {}


def producer_cached(raw: str) -> Producer | None:
    """The producer of a key looked up within CACHE_SECONDS, without a query;
    None means "ask producer_for_key"."""
    cached = _cache.get(hash_api_key(raw))
    return cached[1] if cached and cached[0] > time.monotonic() else None


class BadCredentials(Exception):
    """Why a request's credentials do not name a producer (401)."""


INVALID_KEY = "Invalid or revoked API key."
NOT_PROVIDED = "Authentication credentials were not provided."


def bearer_credential(header: str) -> str:
    """The API key of an `Authorization: Bearer …` header value; raises BadCredentials."""
    scheme, _, credential = header.partition(" ")
    if not header or scheme.lower() != "bearer":
        raise BadCredentials(NOT_PROVIDED)
    credential = credential.strip()
    if not credential:
        raise BadCredentials("Missing API key after 'Bearer'.")
    return credential


def producer_for_key(raw: str) -> Producer | None:
    """The producer of an active key. Hits are cached for CACHE_SECONDS, so a
    revoked key stops working within that time."""
    digest = hash_api_key(raw)
    now = time.monotonic()
    cached = _cache.get(digest)
    if cached and cached[0] > now:
        return cached[1]
    row = (
        ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True)
        .values("id", "name", "rate_limit")
        .first()
    )
    if row is None:
        _cache.pop(digest, None)
        return None
    ApiKey.objects.filter(id=row["id"]).update(last_used_at=timezone.now())
    producer = Producer(api_key_id=row["id"], name=row["name"], own_rate=_own_rate(row))
    _cache[digest] = (now + CACHE_SECONDS, producer)
    return producer


def _own_rate(row: dict) -> Rate | None:
    if not row["rate_limit"]:
        return None
    try:
        return rate_parse(row["rate_limit"])
    except ValueError:
        # Only a hand-edited row gets here (the model validates): the default applies.
        log.warning("API key %s has an invalid rate limit %r", row["id"], row["rate_limit"])
        return None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        try:
            credential = bearer_credential(header)
        except BadCredentials as error:
            if str(error) == NOT_PROVIDED:
                return None  # DRF answers 401 "not provided" (or another scheme may match)
            raise exceptions.AuthenticationFailed(str(error)) from error
        producer = producer_for_key(credential)
        if producer is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        return producer, credential

    def authenticate_header(self, request) -> str:
        return WWW_AUTHENTICATE
