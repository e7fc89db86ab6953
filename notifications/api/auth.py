"""Authentication: producer API keys (`Bearer`) and recipient tokens (`Recipient`)."""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

from notifications.models import ApiKey

KEY_PREFIX = "clk_"
CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Producer:
    """request.user for producer calls."""

    api_key_id: int
    name: str
    is_authenticated: bool = True


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """Create a key; the raw key is returned once and never stored."""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(name=name, prefix=raw[:12], key_hash=hash_api_key(raw))
    return key, raw


_cache: dict[str, tuple[float, Producer]] = {}


def producer_for_key(raw: str) -> Producer | None:
    """The producer of an active key. Hits are cached for CACHE_SECONDS, so a
    revoked key stops working within that time."""
    digest = hash_api_key(raw)
    now = time.monotonic()
    cached = _cache.get(digest)
    if cached and cached[0] > now:
        return cached[1]
    row = ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True).values_list("id", "name").first()
    if row is None:
        _cache.pop(digest, None)
        return None
    ApiKey.objects.filter(id=row[0]).update(last_used_at=timezone.now())
    producer = Producer(api_key_id=row[0], name=row[1])
    _cache[digest] = (now + CACHE_SECONDS, producer)
    return producer


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        credential = credential.strip()
        if not credential:
            raise exceptions.AuthenticationFailed("Missing API key after 'Bearer'.")
        producer = producer_for_key(credential)
        if producer is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return producer, credential

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="clarion"'
