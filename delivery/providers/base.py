"""The interface every provider implements, and what goes in and out of it.

A provider sends a batch of messages of one channel and answers one outcome
per message; it never touches the database (the send service records what
happened, in one statement per batch) and raises only for a failure of the
whole batch, which counts as a retryable failure of each of its messages.

Sends are at least once: a worker that dies after a provider accepted a
message but before the outcome was recorded leaves the delivery claimed, and
it is sent again when the claim's lease ends. Every provider passes
`Message.idempotency_key` (email: `Message.message_id`) so services that
deduplicate do, and so a receiver can.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Outcome.status values a provider answers.
SENT = "sent"  # accepted by the provider
DELIVERED = "delivered"  # the provider says it reached the device or mailbox
RETRY = "retry"  # timeout, connection error, 5xx, 429: worth trying again
FAILED = "failed"  # the provider refused it for good (other 4xx)


@dataclass(frozen=True)
class Message:
    """One delivery to send: rendered content and where it goes."""

    delivery_id: int
    channel: str
    # The profile address (email, phone, webhook URL); for push and web push,
    # empty and `targets` holds the device tokens or subscriptions.
    address: str
    content: dict
    targets: tuple[str, ...] = ()
    # Links the message carries: one-click unsubscribe (email) and where the
    # provider reports status (SMS); filled by the send service.
    unsubscribe_url: str = ""
    status_callback_url: str = ""
    event_id: str = ""
    type_key: str = ""
    recipient_external_id: str = ""

    @property
    def idempotency_key(self) -> str:
        return f"clarion-delivery-{self.delivery_id}"

    def message_id(self, domain: str) -> str:
        return f"<clarion-delivery-{self.delivery_id}@{domain}>"


@dataclass(frozen=True)
class Outcome:
    """What one send of one message did."""

    delivery_id: int
    status: str  # SENT, DELIVERED, RETRY or FAILED
    reason: str = ""  # e.g. http_503, timeout, invalid_token, invalid_address
    error: str = ""
    status_code: int | None = None
    response: str = ""  # the provider's answer, truncated by the recorder
    duration_ms: int | None = None
    retry_after: float | None = None  # seconds, from the provider's Retry-After
    provider_message_id: str = ""
    # Push tokens or web-push subscription endpoints the provider called
    # invalid: removed from the recipient.
    invalid_targets: tuple[str, ...] = field(default=())

    @property
    def retryable(self) -> bool:
        return self.status == RETRY


class Provider(Protocol):
    def send(self, messages: list[Message]) -> list[Outcome]:
        """Send these messages (all of one channel); an outcome each."""
