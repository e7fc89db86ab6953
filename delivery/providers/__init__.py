"""Providers: one module per way of sending (`smtp`, `twilio`, `fcm`, …),
each behind the interface of `base.py`, chosen per channel by URL in
`CLARION_PROVIDERS` (`registry.py`). Adding a provider is one module and one
entry in `registry.SCHEMES`."""

from delivery.providers.base import (
    DELIVERED,
    FAILED,
    RETRY,
    SENT,
    Message,
    Outcome,
    Provider,
)

__all__ = ["DELIVERED", "FAILED", "RETRY", "SENT", "Message", "Outcome", "Provider"]
