"""One provider per external channel, behind one small interface.

`CLARION["PROVIDERS"]` (env `CLARION_PROVIDERS="email=dotted.Path,sms=..."`)
maps a channel (`email`, `sms`, `push`, `web_push`, `webhook`) to a class
implementing `Provider`. A channel with none configured records its
deliveries as `skipped` with reason `no_provider`, so an operator sees at
once why nothing went out. `delivery.console.ConsoleProvider` writes messages
to the worker's log (what `make run` uses).

Sends are at least once: a worker that dies after a provider accepted a
message but before the outcome was recorded leaves the delivery claimed, and
it is sent again when the claim's lease ends. A provider should pass
`Message.idempotency_key` to services that deduplicate with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Message:
    """One delivery to send: rendered content and the recipient's address."""

    delivery_id: int
    channel: str
    address: str
    content: dict

    @property
    def idempotency_key(self) -> str:
        return f"clarion-delivery-{self.delivery_id}"


@dataclass(frozen=True)
class Outcome:
    """What one send did: `sent`, or `failed` with the error, or `skipped` with a reason."""

    delivery_id: int
    status: str
    reason: str = ""
    error: str = ""


class Provider(Protocol):
    def send(self, messages: list[Message]) -> list[Outcome]:
        """Send these messages (all of one channel); an outcome each."""


def provider_for(channel: str) -> Provider | None:
    path = settings.CLARION.get("PROVIDERS", {}).get(channel)
    return import_string(path)() if path else None
