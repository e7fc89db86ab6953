"""FCM (HTTP v1) and APNs (HTTP/2) providers against local servers that speak
the vendors' documented wire formats (tests/fakes/): real sockets, real
OAuth token exchange and JWT verification, no mocks."""

from __future__ import annotations

import socket

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from delivery.providers.apns import SANDBOX_HOST, ApnsProvider, apns_id
from delivery.providers.base import FAILED, RETRY, SENT, Message
from delivery.providers.fcm import FcmProvider
from delivery.providers.registry import ProviderUrl, providers_for
from tests.fakes.apns_server import FakeApns
from tests.fakes.fcm_server import FakeFcm
from tests.helpers import wait_for


def push(delivery_id: int, *tokens: str, title: str = "Ana commented") -> Message:
    return Message(
        delivery_id=delivery_id,
        channel="push",
        address="",
        targets=tokens,
        content={"title": title, "body": "Nice!"},
        event_id="0190f7a0-0000-7000-8000-000000000001",
        type_key="comment.created",
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- FCM ------------------------------------------------------------------------


@pytest.fixture
def fcm(tmp_path):
    fake = FakeFcm().start()
    yield fake
    fake.stop()


@pytest.fixture
def fcm_provider(fcm, tmp_path) -> FcmProvider:
    credentials = fcm.write_service_account(tmp_path / "service-account.json")
    url = f"fcm://{fcm.project}?credentials={credentials}&base_url={fcm.base_url}"
    return FcmProvider.from_url(ProviderUrl.parse("push", url))


def test_fcm_sends_a_v1_message_per_token_with_bearer_and_idempotency_key(fcm, fcm_provider):
    [outcome] = fcm_provider.send([push(41, "tok-a", "tok-b")])

    assert outcome.status == SENT
    assert outcome.invalid_targets == ()
    first = next(s for s in fcm.sends if s.token == "tok-a")
    assert outcome.provider_message_id.startswith("projects/fake-project/messages/")
    assert [s.token for s in fcm.sends] in (["tok-a", "tok-b"], ["tok-b", "tok-a"])
    assert first.body == {
        "message": {
            "token": "tok-a",
            "notification": {"title": "Ana commented", "body": "Nice!"},
            "data": {
                "delivery_id": "41",
                "event_id": "0190f7a0-0000-7000-8000-000000000001",
                "type": "comment.created",
            },
        }
    }
    assert first.headers["authorization"] == "Bearer ya29.fake-access-token-1"
    assert {s.headers["idempotency-key"] for s in fcm.sends} == {"clarion-delivery-41"}


def test_fcm_provider_message_id_is_the_first_accepted_tokens_message_name(fcm, fcm_provider):
    fcm.unregistered.add("tok-dead")
    [outcome] = fcm_provider.send([push(42, "tok-dead", "tok-a", "tok-b")])

    by_token = {s.token: s for s in fcm.sends}
    assert outcome.status == SENT
    assert outcome.provider_message_id == by_token["tok-a"].answer["name"]
    assert by_token["tok-b"].answer["name"] != by_token["tok-a"].answer["name"]
    assert outcome.invalid_targets == ("tok-dead",)


def test_fcm_fetches_one_access_token_for_many_sends(fcm, fcm_provider):
    messages = [push(i, f"tok-{i}-a", f"tok-{i}-b") for i in range(1, 26)]

    first = fcm_provider.send(messages)
    second = fcm_provider.send(messages[:5])

    assert [o.status for o in first + second] == [SENT] * 30
    assert fcm.token_requests == 1
    assert len(fcm.sends) == 60


def test_fcm_refreshes_the_access_token_once_on_401_and_retries_the_call(fcm, fcm_provider):
    fcm_provider.send([push(1, "tok-warm")])
    fcm.revoke_access_tokens()

    outcomes = fcm_provider.send([push(i, f"tok-{i}") for i in range(2, 14)])

    assert [o.status for o in outcomes] == [SENT] * 12
    # The concurrent 401s share one refresh.
    assert fcm.token_requests == 2
    refused = [s for s in fcm.sends if s.status == 401]
    assert refused and {s.headers["authorization"] for s in refused} == {
        "Bearer ya29.fake-access-token-1"
    }
    accepted = [s for s in fcm.sends if s.status == 200 and s.token != "tok-warm"]
    assert {s.headers["authorization"] for s in accepted} == {"Bearer ya29.fake-access-token-2"}


def test_fcm_unregistered_token_is_listed_as_invalid_on_a_sent_message(fcm, fcm_provider):
    fcm.unregistered.add("tok-dead")

    [outcome] = fcm_provider.send([push(7, "tok-live", "tok-dead")])

    assert outcome.status == SENT
    assert outcome.invalid_targets == ("tok-dead",)


def test_fcm_every_token_invalid_fails_the_message_with_invalid_token(fcm, fcm_provider):
    fcm.unregistered.add("tok-gone")
    fcm.invalid.add("tok-garbled")

    [outcome] = fcm_provider.send([push(8, "tok-gone", "tok-garbled")])

    assert outcome.status == FAILED
    assert outcome.reason == "invalid_token"
    assert set(outcome.invalid_targets) == {"tok-gone", "tok-garbled"}


def test_fcm_503_is_retried_after_the_longest_retry_after(fcm, fcm_provider):
    fcm.unavailable.update({"tok-a": 30, "tok-b": 120})
    fcm.unregistered.add("tok-dead")

    [outcome] = fcm_provider.send([push(9, "tok-a", "tok-b", "tok-dead")])

    assert outcome.status == RETRY
    assert outcome.reason == "http_503"
    assert outcome.retry_after == 120.0
    assert "UNAVAILABLE" in outcome.error
    assert outcome.invalid_targets == ("tok-dead",)


def test_fcm_one_outcome_per_message_of_a_batch(fcm, fcm_provider):
    fcm.unregistered.add("tok-dead")
    fcm.unavailable["tok-busy"] = 5

    outcomes = fcm_provider.send([push(1, "tok-a"), push(2, "tok-dead"), push(3, "tok-busy")])

    assert [(o.delivery_id, o.status) for o in outcomes] == [(1, SENT), (2, FAILED), (3, RETRY)]


def test_fcm_unreachable_server_is_a_retryable_connection_error(fcm, tmp_path):
    credentials = fcm.write_service_account(tmp_path / "sa.json")
    url = f"fcm://{fcm.project}?credentials={credentials}&base_url=http://127.0.0.1:{closed_port()}"
    provider = FcmProvider.from_url(ProviderUrl.parse("push", url))

    [outcome] = provider.send([push(10, "tok-a")])

    assert (outcome.status, outcome.reason) == (RETRY, "connection_error")


def test_fcm_unreachable_token_endpoint_retries_the_whole_batch(fcm, tmp_path):
    credentials = fcm.write_service_account(tmp_path / "sa.json")
    credentials.write_text(
        credentials.read_text().replace(fcm.token_uri, f"http://127.0.0.1:{closed_port()}/token")
    )
    url = f"fcm://{fcm.project}?credentials={credentials}&base_url={fcm.base_url}"
    provider = FcmProvider.from_url(ProviderUrl.parse("push", url))

    outcomes = provider.send([push(11, "tok-a"), push(12, "tok-b")])

    assert [(o.status, o.reason) for o in outcomes] == [(RETRY, "oauth_error")] * 2
    assert fcm.sends == []


# --- APNs -----------------------------------------------------------------------


@pytest.fixture
def apns():
    fake = FakeApns().start()
    yield fake
    fake.stop()
    assert fake.errors == []


@pytest.fixture
def apns_provider(apns, tmp_path) -> ApnsProvider:
    key = apns.write_auth_key(tmp_path / "AuthKey.p8")
    url = (
        f"apns://{apns.team_id}:{apns.key_id}@api.push.apple.com"
        f"?key={key}&topic={apns.topic}&base_url={apns.base_url}"
    )
    return ApnsProvider.from_url(ProviderUrl.parse("push", url))


DEVICE_A = "a" * 64
DEVICE_B = "b" * 64
DEVICE_DEAD = "d" * 64


def test_apns_sends_over_http2_with_a_jwt_the_server_verifies(apns, apns_provider):
    [outcome] = apns_provider.send([push(51, DEVICE_A)])

    assert outcome.status == SENT
    [request] = apns.requests
    assert (request.http_version, request.status, apns.refused) == ("HTTP/2", 200, 0)
    assert (request.method, request.path) == ("POST", f"/3/device/{DEVICE_A}")
    assert request.jwt_claims["iss"] == apns.team_id
    headers = request.headers
    assert headers["apns-topic"] == "com.example.app"
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert headers["idempotency-key"] == "clarion-delivery-51"
    assert request.body["aps"] == {"alert": {"title": "Ana commented", "body": "Nice!"}}
    assert outcome.provider_message_id == headers["apns-id"]


def test_apns_jwt_signed_with_another_key_is_refused_for_good(apns, tmp_path):
    other_key = tmp_path / "AuthKey_other.p8"
    other_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    url = (
        f"apns://{apns.team_id}:{apns.key_id}@api.push.apple.com"
        f"?key={other_key}&topic={apns.topic}&base_url={apns.base_url}"
    )
    provider = ApnsProvider.from_url(ProviderUrl.parse("push", url))

    [outcome] = provider.send([push(50, DEVICE_A)])

    assert (outcome.status, outcome.reason) == (FAILED, "http_403")
    assert "InvalidProviderToken" in outcome.error
    assert outcome.invalid_targets == ()


def test_the_fake_apns_refuses_http_1_1(apns):
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{apns.base_url}/3/device/{DEVICE_A}", json={"aps": {}}, timeout=5)
    wait_for(lambda: apns.refused == 1, timeout=5, what="the fake to refuse the connection")
    assert apns.requests == []


def test_apns_reuses_one_jwt_and_one_connection_for_many_sends(apns, apns_provider):
    outcomes = apns_provider.send([push(i, f"{i:064x}") for i in range(1, 31)])
    outcomes += apns_provider.send([push(99, DEVICE_A)])

    assert [o.status for o in outcomes] == [SENT] * 31
    assert len(apns.provider_tokens) == 1
    # Every stream multiplexed on one HTTP/2 connection.
    assert {r.connection for r in apns.requests} == {1}, [
        (r.connection, r.token[-2:]) for r in apns.requests
    ]
    assert apns.connections == 1


def test_apns_connection_closed_while_pooled_is_replaced_without_failing_a_send(
    apns, apns_provider
):
    apns_provider.send([push(63, DEVICE_A)])
    apns.drop_connections()

    outcomes = apns_provider.send([push(i, f"{i:064x}") for i in range(64, 70)])

    assert [o.status for o in outcomes] == [SENT] * 6
    assert apns.connections == 2


def test_apns_resend_carries_the_same_apns_id(apns, apns_provider):
    message = push(52, DEVICE_A, DEVICE_B)

    first = apns_provider.send([message])[0]
    again = apns_provider.send([message])[0]

    ids = [r.headers["apns-id"] for r in apns.requests if r.token == DEVICE_A]
    assert ids == [apns_id(message, DEVICE_A)] * 2
    assert apns_id(message, DEVICE_A) != apns_id(message, DEVICE_B)
    assert first.provider_message_id == again.provider_message_id == ids[0]


def test_apns_unregistered_410_is_listed_as_invalid_on_a_sent_message(apns, apns_provider):
    apns.unregistered.add(DEVICE_DEAD)

    [outcome] = apns_provider.send([push(53, DEVICE_DEAD, DEVICE_A)])

    assert outcome.status == SENT
    assert outcome.provider_message_id == apns_id(push(53), DEVICE_A)
    assert outcome.invalid_targets == (DEVICE_DEAD,)


def test_apns_every_token_unregistered_or_bad_fails_with_invalid_token(apns, apns_provider):
    apns.unregistered.add(DEVICE_DEAD)
    apns.bad.add(DEVICE_B)

    [outcome] = apns_provider.send([push(54, DEVICE_DEAD, DEVICE_B)])

    assert (outcome.status, outcome.reason) == (FAILED, "invalid_token")
    assert set(outcome.invalid_targets) == {DEVICE_DEAD, DEVICE_B}
    assert {r.status for r in apns.requests} == {410, 400}


def test_apns_expired_provider_token_is_replaced_and_the_call_retried_once(apns, apns_provider):
    apns_provider.send([push(55, DEVICE_A)])
    apns.expire_provider_tokens()

    outcomes = apns_provider.send([push(i, f"{i:064x}") for i in range(56, 62)])

    assert [o.status for o in outcomes] == [SENT] * 6
    assert len(apns.provider_tokens) == 2
    assert sum(1 for r in apns.requests if r.reason == "ExpiredProviderToken") == 6
    assert sum(1 for r in apns.requests if r.status == 200) == 7


def test_apns_503_is_retryable(apns, apns_provider):
    apns.unavailable.add(DEVICE_A)

    [outcome] = apns_provider.send([push(62, DEVICE_A)])

    assert (outcome.status, outcome.reason) == (RETRY, "http_503")
    assert "ServiceUnavailable" in outcome.error


def test_apns_sandbox_flag_selects_the_development_server(tmp_path, apns):
    key = apns.write_auth_key(tmp_path / "AuthKey.p8")
    url = f"apns://T:K@api.push.apple.com?key={key}&topic=com.example.app&sandbox=1"

    provider = ApnsProvider.from_url(ProviderUrl.parse("push", url))

    assert provider.base_url == f"https://{SANDBOX_HOST}"


# --- both, through the registry -------------------------------------------------


def test_the_registry_builds_both_push_providers_with_their_platforms(
    settings, fcm, apns, tmp_path
):
    credentials = fcm.write_service_account(tmp_path / "sa.json")
    key = apns.write_auth_key(tmp_path / "AuthKey.p8")
    settings.CLARION = {
        **settings.CLARION,
        "PROVIDERS": [
            ("push", f"fcm://{fcm.project}?credentials={credentials}&base_url={fcm.base_url}"),
            ("push", f"apns://T:K@api.push.apple.com?key={key}&topic=x&base_url={apns.base_url}"),
        ],
    }

    assert [p.provider.platform for p in providers_for("push")] == ["fcm", "apns"]
