"""One retry policy for every channel: backoff with Retry-After, failures that
are final, dead letters, failover to the next provider, and a circuit
breaker per provider shared through Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from delivery.providers.base import RETRY, SENT, Message, Outcome
from delivery.services.breaker import breaker_states
from delivery.services.dispatch import deliveries_claim_due
from delivery.services.send import deliveries_send
from notifications.models import Delivery, Recipient
from notifications.services.deliveries import ReplaySelection, deliveries_replay
from tests.providers import PrimaryProvider, ScriptedProvider, SecondaryProvider
from tests.test_dispatch import NIGHT, deliveries_of, send_event

PRIMARY = "tests.providers.PrimaryProvider"
SECONDARY = "tests.providers.SecondaryProvider"


def send_due(now=None) -> dict[str, int]:
    claim = deliveries_claim_due(now=now or NIGHT)
    ids = [d for d, channel, _ in claim.deliveries if channel == "email"]
    return deliveries_send(delivery_ids=ids, lease=claim.lease) if ids else {}


def email_of(event_id: str) -> Delivery:
    return next(d for d in deliveries_of(event_id) if d.channel == "email")


def later(seconds: float = 10 * 86400):
    return timezone.now() + timedelta(seconds=seconds)


@pytest.mark.django_db
def test_a_5xx_is_retried_later_with_a_backoff_and_the_attempt_recorded(
    api_key, social_type, chain
):
    chain(PRIMARY)
    PrimaryProvider.reset([503])
    event_id = send_event(api_key, "r1", NIGHT)

    before = timezone.now()
    send_due()

    email = email_of(event_id)
    assert (email.status, email.reason, email.attempts) == ("queued", "http_503", 1)
    assert email.next_attempt_at > before
    attempt = email.attempt_log.get()
    assert (attempt.provider, attempt.outcome, attempt.status_code) == (
        "email:PrimaryProvider",
        "retry",
        503,
    )

    send_due(now=later())
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("sent", 2)
    assert email.provider_message_id == f"PrimaryProvider-{email.id}"


@pytest.mark.django_db
def test_a_retry_after_is_honoured(api_key, social_type, chain):
    chain(PRIMARY)
    PrimaryProvider.reset([429])  # answers Retry-After: 120
    event_id = send_event(api_key, "r2", NIGHT)

    before = timezone.now()
    send_due()

    assert email_of(event_id).next_attempt_at >= before + timedelta(seconds=119)


@pytest.mark.django_db
def test_a_400_fails_at_once_and_is_not_retried(api_key, social_type, chain):
    chain(PRIMARY, SECONDARY)
    PrimaryProvider.reset([400])
    event_id = send_event(api_key, "r3", NIGHT)

    send_due()

    email = email_of(event_id)
    assert (email.status, email.reason, email.next_attempt_at) == ("failed", "http_400", None)
    assert SecondaryProvider.calls == []  # a refusal is not a provider outage
    assert send_due(now=later()) == {}


@pytest.mark.django_db
def test_after_the_last_attempt_the_delivery_is_dead_then_replayed_then_sent(
    api_key, social_type, chain
):
    chain(PRIMARY, BREAKER_MIN_CALLS=100)  # the breaker is not what this is about
    PrimaryProvider.reset(default=503)
    event_id = send_event(api_key, "r4", NIGHT)

    for day in range(4):
        send_due(now=later(86400 * (day + 1)))

    email = email_of(event_id)
    assert (email.status, email.attempts, email.attempt_log.count()) == ("dead", 3, 3)

    PrimaryProvider.reset(default=202)
    assert deliveries_replay(ReplaySelection(status="dead", channel="email")) == 1
    email.refresh_from_db()
    assert (email.status, email.attempts, email.reason) == ("queued", 0, "replay")
    send_due(now=later(86400 * 9))
    email.refresh_from_db()
    assert (email.status, email.attempt_log.count()) == ("sent", 4)


@pytest.mark.django_db
def test_replay_never_touches_a_sent_delivery(api_key, social_type, chain):
    chain(PRIMARY)
    event_id = send_event(api_key, "r5", NIGHT)
    send_due()
    email = email_of(event_id)

    assert deliveries_replay(ReplaySelection(ids=[email.id])) == 0
    email.refresh_from_db()
    assert email.status == "sent"


@pytest.mark.django_db
def test_a_retryable_failure_fails_over_to_the_next_provider_in_the_same_attempt(
    api_key, social_type, chain
):
    chain(PRIMARY, SECONDARY)
    PrimaryProvider.reset([503])
    event_id = send_event(api_key, "r6", NIGHT)

    send_due()

    email = email_of(event_id)
    assert (email.status, email.attempts, email.provider) == ("sent", 1, "email:SecondaryProvider")
    assert [(a.provider, a.outcome) for a in email.attempt_log.order_by("id")] == [
        ("email:PrimaryProvider", "retry"),
        ("email:SecondaryProvider", "sent"),
    ]


@pytest.mark.django_db
def test_a_provider_that_raises_is_a_retryable_failure_of_its_batch(api_key, social_type, chain):
    chain(PRIMARY, SECONDARY)
    PrimaryProvider.reset([ConnectionResetError("reset by peer")])
    event_id = send_event(api_key, "r7", NIGHT)

    send_due()

    email = email_of(event_id)
    first = email.attempt_log.order_by("id").first()
    assert email.status == "sent" and "reset by peer" in first.error


@pytest.mark.django_db
def test_the_breaker_opens_fails_over_half_opens_and_closes(api_key, social_type, chain):
    chain(PRIMARY, SECONDARY, BREAKER_COOLDOWN_SECONDS=0.3)
    PrimaryProvider.reset(default=503)
    first = [send_event(api_key, f"b{i}", NIGHT) for i in range(3)]

    send_due()  # three failures of three calls: open

    assert breaker_states(["email:PrimaryProvider"]) == {"email:PrimaryProvider": "open"}
    assert all(email_of(e).status == "sent" for e in first)
    calls_before = len(PrimaryProvider.calls)
    second = send_event(api_key, "b9", NIGHT)
    send_due()
    assert len(PrimaryProvider.calls) == calls_before  # skipped while open
    assert email_of(second).provider == "email:SecondaryProvider"

    import time

    time.sleep(0.4)
    assert breaker_states(["email:PrimaryProvider"]) == {"email:PrimaryProvider": "half_open"}
    PrimaryProvider.reset(default=200)
    third = send_event(api_key, "b10", NIGHT)
    send_due()  # the probe
    assert email_of(third).provider == "email:PrimaryProvider"
    assert breaker_states(["email:PrimaryProvider"]) == {"email:PrimaryProvider": "closed"}


@pytest.mark.django_db
def test_a_failed_probe_opens_the_breaker_again(api_key, social_type, chain):
    chain(PRIMARY, SECONDARY, BREAKER_COOLDOWN_SECONDS=0.2)
    PrimaryProvider.reset(default=503)
    for i in range(3):
        send_event(api_key, f"p{i}", NIGHT)
    send_due()
    import time

    time.sleep(0.3)
    send_event(api_key, "p9", NIGHT)
    send_due()

    assert breaker_states(["email:PrimaryProvider"]) == {"email:PrimaryProvider": "open"}


@pytest.mark.django_db
def test_with_every_breaker_open_deliveries_wait_without_spending_an_attempt(
    api_key, social_type, chain
):
    chain(PRIMARY)
    PrimaryProvider.reset(default=503)
    for i in range(3):
        send_event(api_key, f"w{i}", NIGHT)
    send_due()  # opens
    event_id = send_event(api_key, "w9", NIGHT)
    calls = len(PrimaryProvider.calls)

    send_due()

    email = email_of(event_id)
    assert len(PrimaryProvider.calls) == calls
    assert (email.status, email.reason, email.attempts) == ("queued", "breaker_open", 0)
    assert email.next_attempt_at > timezone.now()
    assert not email.attempt_log.exists()


@pytest.mark.django_db
def test_a_delivery_whose_sends_keep_killing_the_worker_ends_dead(api_key, social_type, chain):
    chain(PRIMARY)
    event_id = send_event(api_key, "k1", NIGHT)
    Delivery.objects.filter(id=email_of(event_id).id).update(attempts=3)  # three claims, no outcome

    assert send_due()["dead"] == 1
    email = email_of(event_id)
    assert (email.status, email.reason) == ("dead", "attempts_exhausted")
    assert PrimaryProvider.calls == []


@pytest.mark.django_db
def test_without_redis_the_breaker_lets_calls_through(api_key, social_type, chain, settings):
    chain(PRIMARY)
    from delivery.services import breaker

    event_id = send_event(api_key, "n1", NIGHT)
    breaker._Redis.client, breaker._Redis.down_until = None, 0.0
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        send_due()
    finally:
        breaker._Redis.client, breaker._Redis.down_until = None, 0.0
    assert email_of(event_id).status == "sent"


@pytest.mark.django_db
def test_metrics_show_breaker_states_and_dead_letters(api_key, social_type, chain, client):
    chain(PRIMARY, BREAKER_MIN_CALLS=1)
    PrimaryProvider.reset(default=503)
    event_id = send_event(api_key, "m1", NIGHT)
    send_due()  # one failure of one call opens it
    Delivery.objects.filter(id=email_of(event_id).id).update(status="dead")

    text = client.get("/metrics").content.decode()

    breaker = 'clarion_provider_breaker_state{channel="email",provider="email:PrimaryProvider"}'
    assert f"{breaker} 2.0" in text
    assert 'clarion_deliveries_undelivered{channel="email",status="dead"} 1.0' in text


class CallbackFirstProvider(PrimaryProvider):
    """Sends, and the provider's 'delivered' callback arrives before the send is recorded."""

    def send(self, messages):
        from notifications.services.delivery_status import deliveries_advance

        outcomes = super().send(messages)
        deliveries_advance(status="delivered", delivery_ids=[m.delivery_id for m in messages])
        return outcomes


@pytest.mark.django_db
def test_a_callback_that_overtakes_the_record_of_its_send_keeps_its_status(
    api_key, social_type, chain
):
    chain("tests.test_delivery_retries.CallbackFirstProvider")
    event_id = send_event(api_key, "cb1", NIGHT)

    send_due()

    email = email_of(event_id)
    assert (email.status, email.next_attempt_at) == ("delivered", None)
    assert email.provider_message_id and email.attempt_log.get().outcome == "sent"


class OwnDestinationProvider(PrimaryProvider):
    """Like the webhook channel: every message goes to its recipient's own destination."""

    uses_breaker = False


@pytest.mark.django_db
def test_a_provider_of_many_destinations_has_no_shared_breaker(api_key, social_type, chain):
    chain("tests.test_delivery_retries.OwnDestinationProvider", BREAKER_MIN_CALLS=1)
    OwnDestinationProvider.reset(default=503)
    for i in range(3):
        send_event(api_key, f"o{i}", NIGHT)

    send_due()
    send_due(now=later())

    assert len(OwnDestinationProvider.calls) == 2  # never refused
    name = "email:OwnDestinationProvider"
    assert breaker_states([name]) == {name: "closed"}


@pytest.mark.django_db
def test_a_probe_that_half_fails_opens_the_breaker_again(api_key, social_type, chain):
    from delivery.services.breaker import breaker_allow, breaker_record

    chain(PRIMARY, BREAKER_COOLDOWN_SECONDS=0.05)
    name = "email:probe-test"
    assert breaker_record(name, successes=0, failures=5) == "open"
    import time

    time.sleep(0.1)
    permit = breaker_allow(name)
    assert permit.allowed and permit.probe
    assert breaker_record(name, successes=5, failures=5, probe=True) == "open"


class DestinationsProvider(ScriptedProvider):
    """Like the webhook channel: messages name their destination (here the
    address's domain); those to a domain in `down` answer 503."""

    answers, calls = [], []
    down: set[str] = set()
    uses_breaker = False

    @staticmethod
    def destination_of(message: Message) -> str:
        return message.address.rpartition("@")[2]

    def send(self, messages: list[Message]) -> list[Outcome]:
        type(self).calls.append([m.delivery_id for m in messages])
        return [
            Outcome(m.delivery_id, RETRY, reason="http_503", status_code=503)
            if self.destination_of(m) in self.down
            else Outcome(m.delivery_id, SENT, status_code=200)
            for m in messages
        ]


def on_domain(external_id: str, domain: str) -> None:
    Recipient.objects.filter(external_id=external_id).update(email=f"{external_id}@{domain}")


@pytest.mark.django_db
def test_a_failing_destination_opens_its_own_breaker_and_fails_over_alone(
    api_key, social_type, chain
):
    chain("tests.test_delivery_retries.DestinationsProvider", SECONDARY, BREAKER_MIN_CALLS=2)
    DestinationsProvider.reset()
    DestinationsProvider.down = {"down.example"}
    SecondaryProvider.reset()
    first = {}
    for name, domain in [("d1", "down.example"), ("d2", "down.example"), ("u1", "up.example")]:
        first[name] = send_event(api_key, name, NIGHT)
        on_domain(name, domain)

    send_due()

    provider = "email:DestinationsProvider"
    assert breaker_states([f"{provider}@down.example", f"{provider}@up.example"]) == {
        f"{provider}@down.example": "open",
        f"{provider}@up.example": "closed",
    }
    assert {name: email_of(e).provider for name, e in first.items()} == {
        "d1": "email:SecondaryProvider",
        "d2": "email:SecondaryProvider",
        "u1": provider,
    }
    DestinationsProvider.calls.clear()
    again = {name: send_event(api_key, name, NIGHT) for name in ("d1", "u1")}
    on_domain("d1", "down.example")
    on_domain("u1", "up.example")

    send_due()

    called = {i for batch in DestinationsProvider.calls for i in batch}
    assert called == {email_of(again["u1"]).id}  # the open destination is skipped
    assert email_of(again["d1"]).provider == "email:SecondaryProvider"
    assert email_of(again["d1"]).attempt_log.count() == 1


@pytest.mark.django_db
def test_a_destination_whose_only_provider_is_open_waits_without_spending_an_attempt(
    api_key, social_type, chain
):
    chain("tests.test_delivery_retries.DestinationsProvider", BREAKER_MIN_CALLS=1)
    DestinationsProvider.reset()
    DestinationsProvider.down = {"down.example"}
    first = send_event(api_key, "w1", NIGHT)
    on_domain("w1", "down.example")
    send_due()
    assert email_of(first).attempts == 1

    second = send_event(api_key, "w2", NIGHT)
    on_domain("w2", "down.example")
    send_due()

    email = email_of(second)
    assert (email.status, email.attempts, email.reason) == ("queued", 0, "breaker_open")
    assert email.next_attempt_at is not None
