"""Providers for tests: real classes behind the provider interface."""

from __future__ import annotations

from delivery.console import ConsoleProvider
from delivery.providers import Message, Outcome


class UnreachableProvider:
    """A service that cannot be reached."""

    def send(self, messages: list[Message]) -> list[Outcome]:
        raise ConnectionError("connection refused by smtp.example.com:587")


class SlowConsoleProvider(ConsoleProvider):
    """Sends, but only after the claim's lease has ended and a sweep claimed the delivery again."""

    def send(self, messages: list[Message]) -> list[Outcome]:
        from datetime import timedelta

        from delivery.services.dispatch import deliveries_claim_due
        from notifications.models import Delivery

        lease = Delivery.objects.get(id=messages[0].delivery_id).next_attempt_at
        deliveries_claim_due(now=lease + timedelta(seconds=1))
        return super().send(messages)
