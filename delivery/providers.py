"""One provider per external channel, behind one small interface.

`CLARION["PROVIDERS"]` maps a channel (`email`, `sms`, `push`, `web_push`,
`webhook`) to the dotted path of a class implementing `Provider`. A channel
with none configured records its deliveries as `skipped` with reason
`no_provider`, so an operator sees at once why nothing went out.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Outcome:
    """What one send did: `sent`, or `failed` with the error (retried) or `skipped` with a reason."""

    delivery_id: int
    status: str
    reason: str = ""
    error: str = ""


class Provider(Protocol):
    channel: str

    def send(self, delivery_ids: list[int]) -> list[Outcome]:
        """Render and send these deliveries (all of this provider's channel); an outcome each."""


@lru_cache(maxsize=None)
def provider_for(channel: str) -> Provider | None:
    path = settings.CLARION.get("PROVIDERS", {}).get(channel)
    return import_string(path)() if path else None
