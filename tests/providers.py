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


class ScriptedProvider:
    """A provider that answers what the test scripted, one answer per call
    (an HTTP-like status code, or an exception to raise), and keeps the calls.
    Subclassed per test role so two of them can stand in one failover chain."""

    answers: list = []
    default: int | Exception = 200
    calls: list[list[int]] = []

    @classmethod
    def reset(cls, answers: list | None = None, default: int | Exception = 200) -> None:
        cls.answers, cls.default, cls.calls = list(answers or []), default, []

    def send(self, messages: list[Message]) -> list[Outcome]:
        from delivery.providers import FAILED, RETRY, SENT

        cls = type(self)
        cls.calls.append([m.delivery_id for m in messages])
        answer = cls.answers.pop(0) if cls.answers else cls.default
        if isinstance(answer, Exception):
            raise answer
        outcomes = []
        for message in messages:
            if 200 <= answer < 300:
                outcomes.append(
                    Outcome(
                        message.delivery_id,
                        SENT,
                        status_code=answer,
                        provider_message_id=f"{cls.__name__}-{message.delivery_id}",
                    )
                )
            elif answer >= 500 or answer == 429:
                outcomes.append(
                    Outcome(
                        message.delivery_id,
                        RETRY,
                        reason=f"http_{answer}",
                        status_code=answer,
                        retry_after=120.0 if answer == 429 else None,
                    )
                )
            else:
                outcomes.append(
                    Outcome(
                        message.delivery_id, FAILED, reason=f"http_{answer}", status_code=answer
                    )
                )
        return outcomes


class PrimaryProvider(ScriptedProvider):
    answers, calls = [], []


class SecondaryProvider(ScriptedProvider):
    answers, calls = [], []
