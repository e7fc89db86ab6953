"""The Twilio SMS provider against a local server speaking the Messages API:
what it sends, how it reads every kind of answer, and how it uses the wire
(keep-alive, a few requests in flight)."""

from __future__ import annotations

import re
import socket
import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from delivery.providers import FAILED, RETRY, SENT, Message
from delivery.providers.registry import ProviderUrl, providers_for
from delivery.providers.twilio import TwilioProvider
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioFake

PUBLIC_URL = "https://clarion.example.com"
TO = "+15557654321"
SID = re.compile(r"SM[0-9a-f]{32}")


@pytest.fixture
def fake():
    with TwilioFake() as server:
        yield server


def use_provider(settings, url: str, **clarion) -> TwilioProvider:
    """Configure `url` as the SMS provider, as the registry builds it."""
    settings.CLARION = {
        **settings.CLARION,
        "PROVIDERS": [("sms", url)],
        "PUBLIC_URL": PUBLIC_URL,
        **clarion,
    }
    provider = providers_for("sms")[0].provider
    assert isinstance(provider, TwilioProvider)
    return provider


@pytest.fixture
def twilio(fake, settings) -> TwilioProvider:
    return use_provider(settings, fake.provider_url())


def sms(delivery_id: int, to: str = TO, text: str = "Ana commented: Nice!", **fields) -> Message:
    return Message(
        delivery_id=delivery_id, channel="sms", address=to, content={"text": text}, **fields
    )


def test_an_accepted_message_is_sent_with_twilios_sid(twilio, fake):
    [outcome] = twilio.send([sms(7)])
    assert outcome.status == SENT
    assert outcome.status_code == 201
    assert SID.fullmatch(outcome.provider_message_id)
    assert outcome.provider_message_id in fake.messages


def test_the_request_is_the_documented_form_with_basic_auth(twilio, fake):
    twilio.send([sms(7)])
    [request] = fake.requests
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "To": TO,
        "From": FROM_NUMBER,
        "Body": "Ana commented: Nice!",
        "StatusCallback": f"{PUBLIC_URL}/hooks/twilio/status?delivery=7",
    }
    assert request.status == 201  # the fake checked the basic auth


def test_every_request_carries_the_deliverys_idempotency_key(twilio, fake):
    twilio.send([sms(7), sms(8, to="+15557654322")])
    keys = sorted(
        (r.idempotency_key, r.headers["I-Twilio-Idempotency-Token"]) for r in fake.requests
    )
    assert keys == [("clarion-delivery-7",) * 2, ("clarion-delivery-8",) * 2]


def test_a_resend_of_a_delivery_gets_the_same_message_back(twilio, fake):
    first, second = twilio.send([sms(7)]), twilio.send([sms(7)])
    assert first[0].provider_message_id == second[0].provider_message_id
    assert len(fake.messages) == 1


def test_a_messaging_service_is_named_instead_of_a_from_number(fake, settings):
    provider = use_provider(settings, fake.provider_url(messaging_service_sid="MG" + "a" * 32))
    [outcome] = provider.send([sms(7)])
    assert outcome.status == SENT
    assert fake.requests[0].form["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in fake.requests[0].form


def test_the_messages_own_status_callback_url_wins(twilio, fake):
    twilio.send([sms(7, status_callback_url="https://hooks.example.com/sms?d=7")])
    assert fake.requests[0].form["StatusCallback"] == "https://hooks.example.com/sms?d=7"


@pytest.mark.parametrize("code", [21211, 21614])
def test_an_invalid_number_fails_as_invalid_address(twilio, fake, code):
    fake.reject_number(TO, code)
    [outcome] = twilio.send([sms(7)])
    assert (outcome.status, outcome.reason, outcome.status_code) == (FAILED, "invalid_address", 400)
    assert f"twilio {code}" in outcome.error


def test_a_malformed_number_fails_as_invalid_address(twilio):
    [outcome] = twilio.send([sms(7, to="0800-NOT-A-NUMBER")])
    assert (outcome.status, outcome.reason) == (FAILED, "invalid_address")


def test_an_unsubscribed_number_fails_as_unsubscribed(twilio, fake):
    fake.reject_number(TO, 21610)
    [outcome] = twilio.send([sms(7)])
    assert (outcome.status, outcome.reason) == (FAILED, "unsubscribed")


def test_another_client_error_fails_with_its_http_status_and_twilio_code(twilio):
    [outcome] = twilio.send([sms(7, text="")])
    assert (outcome.status, outcome.reason) == (FAILED, "http_400")
    assert "twilio 21602: Message body is required." in outcome.error


def test_a_wrong_auth_token_fails_with_http_401(fake, settings):
    provider = use_provider(settings, fake.provider_url(auth_token="wrong"))
    [outcome] = provider.send([sms(7)])
    assert (outcome.status, outcome.reason) == (FAILED, "http_401")


def test_429_is_retried_after_its_retry_after(twilio, fake):
    fake.fail_next(1, status=429, retry_after="30")
    [outcome] = twilio.send([sms(7)])
    assert (outcome.status, outcome.reason, outcome.retry_after) == (RETRY, "http_429", 30.0)


def test_503_is_retried(twilio, fake):
    fake.fail_next(1, status=503, retry_after="5")
    [outcome] = twilio.send([sms(7)])
    assert (outcome.status, outcome.reason, outcome.retry_after) == (RETRY, "http_503", 5.0)
    [again] = twilio.send([sms(7)])
    assert again.status == SENT


def test_a_timeout_is_retried_with_reason_timeout(fake, settings):
    provider = use_provider(settings, fake.provider_url(), PROVIDER_TIMEOUT_SECONDS=0.2)
    fake.delay = 1.0
    [outcome] = provider.send([sms(7)])
    assert (outcome.status, outcome.reason) == (RETRY, "timeout")
    assert outcome.duration_ms < 900


def test_an_unreachable_api_is_retried_as_a_connection_error(settings):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    provider = use_provider(
        settings,
        f"twilio://{ACCOUNT_SID}:{AUTH_TOKEN}@api.twilio.com?from=%2B15550001111"
        f"&base_url=http://127.0.0.1:{port}",
    )
    [outcome] = provider.send([sms(7)])
    assert (outcome.status, outcome.reason) == (RETRY, "connection_error")


def test_every_second_call_failing_retries_just_those_in_message_order(twilio, fake):
    fake.fail_every(2, status=503)
    outcomes = twilio.send([sms(i, to=f"+1555765{i:04d}") for i in range(1, 11)])
    assert [o.delivery_id for o in outcomes] == list(range(1, 11))
    assert sorted(o.status for o in outcomes) == [RETRY] * 5 + [SENT] * 5


def test_a_phoneless_message_fails_without_a_call(twilio, fake):
    [outcome] = twilio.send([sms(7, to="")])
    assert (outcome.status, outcome.reason) == (FAILED, "invalid_address")
    assert fake.requests == []


def test_fifty_messages_go_over_a_few_kept_alive_connections(twilio, fake):
    outcomes = twilio.send([sms(i, to=f"+1555765{i:04d}") for i in range(50)])
    assert {o.status for o in outcomes} == {SENT}
    assert 1 <= fake.connections <= 8
    twilio.send([sms(i, to=f"+1555765{i:04d}") for i in range(50, 100)])
    # The next batch reuses them: the pool may grow to the 8 in flight, never more
    # (the first batch's threads may not all have been busy at once).
    assert fake.connections <= 8


def test_a_batch_has_up_to_eight_requests_in_flight(twilio, fake):
    fake.delay = 0.1
    started = time.monotonic()
    outcomes = twilio.send([sms(i, to=f"+1555765{i:04d}") for i in range(24)])
    elapsed = time.monotonic() - started
    assert {o.status for o in outcomes} == {SENT}
    assert fake.max_in_flight == 8
    assert elapsed < 1.6  # one by one: 24 x 0.1 s = 2.4 s at least


def test_concurrency_1_sends_one_request_at_a_time(fake, settings):
    provider = use_provider(settings, fake.provider_url(concurrency="1"))
    provider.send([sms(i, to=f"+1555765{i:04d}") for i in range(5)])
    assert fake.max_in_flight == 1


@pytest.mark.parametrize(
    "url",
    [
        "twilio://api.twilio.com?from=%2B15550001111",  # no credentials
        f"twilio://{ACCOUNT_SID}:{AUTH_TOKEN}@api.twilio.com",  # no sender
        f"twilio://{ACCOUNT_SID}:{AUTH_TOKEN}@api.twilio.com?from=%2B1555&messaging_service_sid=MG1",
        f"twilio://{ACCOUNT_SID}:{AUTH_TOKEN}@api.twilio.com?from=%2B1555&concurrency=many",
    ],
)
def test_a_url_that_cannot_send_is_refused_at_start_up(url):
    with pytest.raises(ImproperlyConfigured):
        TwilioProvider.from_url(ProviderUrl.parse("sms", url))


def test_the_host_names_the_api_edge_unless_base_url_is_given():
    url = f"twilio://{ACCOUNT_SID}:{AUTH_TOKEN}@api.dublin.ie1.twilio.com?from=%2B15550001111"
    provider = TwilioProvider.from_url(ProviderUrl.parse("sms", url))
    assert provider.messages_url == (
        f"https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    )
    assert AUTH_TOKEN not in repr(provider)
