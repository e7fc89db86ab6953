"""The Standard Webhooks secret that inbound hooks verify.

`CLARION_HOOK_SIGNING_SECRET` when set ("whsec_" + base64 of 24 to 64 random
bytes). Otherwise derived by HMAC from SECRET_KEY alone, so a deployment has a
working secret without configuring one. Never from the outbound secret
(`CLARION_WEBHOOK_SIGNING_SECRET`), not even derived: the webhook channel's
receivers hold that one, and could then compute this one and sign events
Clarion would believe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "whsec_"
DERIVATION_LABEL = b"clarion.hooks.inbound.v1"


def hook_secret() -> str:
    """The "whsec_…" secret inbound hooks are signed with."""
    configured = settings.CLARION.get("HOOK_SIGNING_SECRET", "")
    if configured:
        _check(configured)
        return configured
    digest = hmac.new(settings.SECRET_KEY.encode(), DERIVATION_LABEL, hashlib.sha256).digest()
    return PREFIX + base64.b64encode(digest).decode()


def _check(secret: str) -> None:
    try:
        raw = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(
            "CLARION_HOOK_SIGNING_SECRET must be 'whsec_' followed by base64."
        ) from exc
    if not secret.startswith(PREFIX) or len(raw) < 16:
        raise ImproperlyConfigured(
            "CLARION_HOOK_SIGNING_SECRET must be 'whsec_' followed by base64 of at least 16 bytes."
        )
