"""The SSRF guard: webhook targets only on public addresses, checked at
connect time on the address actually connected (delivery/providers/ssrf.py,
common/webhook_urls.py).

Loopback forms are tried against a real receiver on 127.0.0.1 / ::1: with
the development setting on, the same URL reaches it (so the form really
names loopback); without it, the connection is never made."""

from __future__ import annotations

import httpcore
import httpx
import pytest

from common.webhook_urls import address_problem, check_url, url_problem
from delivery.providers.base import FAILED
from delivery.providers.base import Message as ProviderMessage
from delivery.providers.ssrf import BlockedAddress, GuardedBackend, GuardedTransport
from delivery.providers.webhook import WebhookProvider
from tests.fakes.webhook_receiver import WebhookReceiver


@pytest.fixture
def refuse_private(settings):
    settings.CLARION = {**settings.CLARION, "WEBHOOK_ALLOW_PRIVATE": False}


@pytest.fixture
def allow_private(settings):
    settings.CLARION = {**settings.CLARION, "WEBHOOK_ALLOW_PRIVATE": True}


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def receiver_v6():
    with WebhookReceiver(host="::1") as running:
        yield running


def guarded(resolve=None) -> httpx.Client:
    return httpx.Client(transport=GuardedTransport(resolve=resolve), timeout=5)


def webhook_message(url: str, delivery_id: int = 1) -> ProviderMessage:
    return ProviderMessage(
        delivery_id=delivery_id, channel="webhook", address=url, content={"payload": "{}"}
    )


# --- the corpus, refused at connect time ---------------------------------------


def test_metadata_address_is_refused_even_with_the_dev_setting(allow_private):
    with guarded() as client, pytest.raises(BlockedAddress, match="metadata"):
        client.post("http://169.254.169.254/latest/meta-data/")


def test_ipv6_metadata_address_is_refused_even_with_the_dev_setting(allow_private):
    with pytest.raises(BlockedAddress, match="metadata"):
        GuardedBackend().connect_tcp("fd00:ec2::254", 80, timeout=1)


def test_loopback_ipv4_is_refused_without_the_dev_setting(refuse_private, receiver):
    with guarded() as client, pytest.raises(BlockedAddress, match="loopback"):
        client.post(receiver.url(), content=b"{}")
    assert receiver.connections == 0


def test_loopback_ipv4_is_reached_with_the_dev_setting(allow_private, receiver):
    with guarded() as client:
        assert client.post(receiver.url(), content=b"{}").status_code == 200
    assert len(receiver.requests) == 1


def test_loopback_ipv6_is_refused_without_the_dev_setting(refuse_private, receiver_v6):
    with guarded() as client, pytest.raises(BlockedAddress, match="loopback"):
        client.post(receiver_v6.url(), content=b"{}")
    assert receiver_v6.connections == 0


def test_loopback_ipv6_is_reached_with_the_dev_setting(allow_private, receiver_v6):
    with guarded() as client:
        assert client.post(receiver_v6.url(), content=b"{}").status_code == 200
    assert len(receiver_v6.requests) == 1


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1"])
def test_numeric_loopback_forms_are_refused_without_the_dev_setting(refuse_private, receiver, host):
    with guarded() as client, pytest.raises(BlockedAddress, match="127.0.0.1"):
        client.post(f"http://{host}:{receiver.port}/hook", content=b"{}")
    assert receiver.connections == 0


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1"])
def test_numeric_loopback_forms_do_name_loopback(allow_private, receiver, host):
    """The control for the test above: the resolver reads these as 127.0.0.1."""
    with guarded() as client:
        assert client.post(f"http://{host}:{receiver.port}/hook").status_code == 200


def test_octal_loopback_is_refused_at_connect(refuse_private, receiver):
    # httpx refuses the URL itself; the backend refuses the host if asked.
    with pytest.raises(BlockedAddress, match="127.0.0.1"):
        GuardedBackend().connect_tcp("0177.0.0.1", receiver.port, timeout=1)
    assert receiver.connections == 0


def test_octal_loopback_is_refused_by_the_url_check(refuse_private):
    assert "127.0.0.1" in check_url("http://0177.0.0.1/hook")


def test_a_name_resolving_to_a_private_address_is_refused(refuse_private):
    asked = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["10.0.0.5"]

    with guarded(resolve) as client, pytest.raises(BlockedAddress, match="10.0.0.5"):
        client.post("http://hooks.internal.example/x", content=b"{}")
    assert asked == [("hooks.internal.example", 80)]


def test_a_name_with_one_private_address_among_public_ones_is_refused(refuse_private):
    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.5"]

    with guarded(resolve) as client, pytest.raises(BlockedAddress, match="10.0.0.5"):
        client.post("http://mixed.example/x")


def test_the_checked_address_is_the_one_connected_with_the_original_host_header(
    allow_private, receiver
):
    """The name is resolved once, by the guard: the connection goes to the
    address it checked, and the request still names the original host."""
    calls = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    with guarded(resolve) as client:
        response = client.post(f"http://hooks.example.test:{receiver.port}/x", content=b"{}")
    assert response.status_code == 200
    assert calls == ["hooks.example.test"]
    assert receiver.requests[0].headers["host"] == f"hooks.example.test:{receiver.port}"


def test_a_name_that_does_not_resolve_is_a_connection_error():
    def resolve(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(httpcore.ConnectError):
        GuardedBackend(resolve).connect_tcp("nowhere.invalid", 80, timeout=1)


def test_a_redirect_to_an_internal_address_is_not_followed(allow_private, receiver):
    receiver.answer(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    outcome = WebhookProvider().send([webhook_message(receiver.url())])[0]
    assert (outcome.status, outcome.reason, outcome.status_code) == (FAILED, "redirect", 302)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO"])
def test_other_schemes_are_refused_by_the_transport(allow_private, url):
    with guarded() as client, pytest.raises((BlockedAddress, httpx.UnsupportedProtocol)):
        client.get(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO"])
def test_other_schemes_fail_the_webhook_message_as_blocked(allow_private, url):
    outcome = WebhookProvider().send([webhook_message(url)])[0]
    assert (outcome.status, outcome.reason) == (FAILED, "blocked_address")


def test_a_blocked_name_fails_the_message_for_good(refuse_private):
    provider = WebhookProvider(client=guarded(lambda host, port: ["10.0.0.5"]))
    outcome = provider.send([webhook_message("https://hooks.example.com/x")])[0]
    assert (outcome.status, outcome.reason, outcome.retryable) == (FAILED, "blocked_address", False)
    assert "10.0.0.5" in outcome.error


# --- the rule itself ---------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "::1",
        "169.254.1.1",
        "fe80::1",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "240.0.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "192.0.2.10",
        "198.18.0.1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert address_problem(address, allow_private=False)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert address_problem(address, allow_private=False) is None


def test_the_dev_setting_lifts_the_rule_except_for_metadata():
    assert address_problem("10.0.0.5", allow_private=True) is None
    assert address_problem("::ffff:127.0.0.1", allow_private=True) is None
    assert address_problem("169.254.169.254", allow_private=True)
    assert address_problem("::ffff:169.254.169.254", allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "hooks.example.com/x",
        "ftp://hooks.example.com/",
        "http://",
        "http:///path",
        "http://exa mple.com/",
        "http://example.com/\x00",
        "http://example.com:99999/",
        "http://" + "a" * 3000 + ".com/",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://localhost:8000/",
        "http://LOCALHOST./",
        "http://app.localhost/",
        "http://10.0.0.5/",
        "http://2130706433/",
        "http://[::ffff:192.168.0.1]/",
    ],
)
def test_check_url_refuses_unusable_and_literal_private_urls(refuse_private, url):
    assert check_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/x?a=1", "http://93.184.215.14:8080/", "https://[2606:4700::1]/"],
)
def test_check_url_accepts_public_http_urls(refuse_private, url):
    assert check_url(url) is None


def test_check_url_accepts_loopback_with_the_dev_setting(allow_private):
    assert check_url("http://127.0.0.1:9000/hook") is None


def test_url_problem_tells_a_blocked_address_from_a_bad_one(refuse_private):
    assert url_problem("http://10.0.0.5/")[0] == "blocked_address"
    assert url_problem("not a url")[0] == "bad_address"
    assert url_problem(42)[0] == "bad_address"
