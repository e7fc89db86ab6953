"""The Standard Webhooks secret that signs the webhook channel's calls."""

from __future__ import annotations

import base64
import hashlib
import hmac

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # Standard Webhooks: 24 to 64 bytes


def webhook_signing_secret() -> str:
    """`CLARION["WEBHOOK_SIGNING_SECRET"]` ("whsec_…"), else one derived from
    SECRET_KEY, so a deployment signs from the start and keeps the same
    secret across restarts and workers (receivers verify with it: put it in
    the setting to show it to them, or to rotate SECRET_KEY without it)."""
    configured = settings.CLARION.get("WEBHOOK_SIGNING_SECRET") or ""
    if configured:
        secret = configured if configured.startswith(SECRET_PREFIX) else SECRET_PREFIX + configured
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError:
            key = b""
        if len(key) < MIN_KEY_BYTES:
            raise ImproperlyConfigured(
                "CLARION_WEBHOOK_SIGNING_SECRET must be whsec_ followed by the base64 of"
                f" at least {MIN_KEY_BYTES} random bytes"
            )
        return secret
    digest = hmac.new(
        settings.SECRET_KEY.encode(), b"clarion webhook channel signing secret", hashlib.sha256
    ).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()
