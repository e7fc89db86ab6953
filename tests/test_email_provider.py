"""The email providers against a real SMTP server on loopback (aiosmtpd) and
a django-anymail backend: MIME parts, headers, one connection per batch,
and one outcome per message whatever the server does."""

from __future__ import annotations

import pytest
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailRecipientStatus
from django.core import mail
from django.core.exceptions import ImproperlyConfigured

from delivery.providers.base import FAILED, RETRY, SENT, Message
from delivery.providers.django_email import DjangoEmailProvider
from delivery.providers.email_message import email_domain
from delivery.providers.registry import ProviderUrl
from delivery.providers.smtp import SmtpProvider
from tests.fakes.smtp_server import (
    FakeSmtpServer,
    SilentServer,
    self_signed_certificate,
    unused_port,
)

# The fake takes logins over plain connections too (aiosmtpd warns about that).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

FROM = "Clarion%20%3Cnotify%40example.com%3E"  # "Clarion <notify@example.com>"
UNSUBSCRIBE = "https://clarion.example.com/hooks/unsubscribe/abc:def"


@pytest.fixture
def smtp_server():
    with FakeSmtpServer() as server:
        yield server


def smtp_provider(server_or_port, query: str = "", scheme: str = "smtp", auth: str = ""):
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    url = f"{scheme}://{auth}127.0.0.1:{port}?from={FROM}&timeout=2{query}"
    return SmtpProvider.from_url(ProviderUrl.parse("email", url))


def message(delivery_id: int, address: str | None = None, **content) -> Message:
    return Message(
        delivery_id=delivery_id,
        channel="email",
        address=address or f"user{delivery_id}@example.org",
        content=content
        or {"subject": f"Hello {delivery_id}", "text": "Plain", "html": "<p>Rich</p>"},
        unsubscribe_url=UNSUBSCRIBE,
    )


def statuses(outcomes) -> list[tuple[int, str, str]]:
    return [(o.delivery_id, o.status, o.reason) for o in outcomes]


# -- the message ---------------------------------------------------------------


def test_text_and_html_go_as_multipart_alternative(smtp_server):
    smtp_provider(smtp_server).send([message(1, "ann@example.org")])

    received = smtp_server.message_to("ann@example.org")
    assert received.get_content_type() == "multipart/alternative"
    parts = list(received.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "Plain"
    assert parts[1].get_content().strip() == "<p>Rich</p>"
    assert received["Subject"] == "Hello 1"
    assert received["From"] == "Clarion <notify@example.com>"
    assert received["To"] == "ann@example.org"


def test_html_only_content_gets_a_text_part_derived_from_it(smtp_server):
    html = '<h1>Hi</h1><p>See <a href="https://example.com/x">this</a></p>'
    smtp_provider(smtp_server).send([message(1, "ann@example.org", subject="S", html=html)])

    parts = list(smtp_server.message_to("ann@example.org").iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text = parts[0].get_content()
    assert "Hi" in text and "this" in text and "<" not in text


def test_text_only_content_is_a_single_text_part(smtp_server):
    smtp_provider(smtp_server).send([message(1, "ann@example.org", subject="S", text="Just text")])

    received = smtp_server.message_to("ann@example.org")
    assert received.get_content_type() == "text/plain"
    assert received.get_content().strip() == "Just text"


def test_headers_name_the_delivery_and_offer_one_click_unsubscribe(smtp_server):
    [outcome] = smtp_provider(smtp_server).send([message(42, "ann@example.org")])

    received = smtp_server.message_to("ann@example.org")
    assert received["Message-ID"] == "<clarion-delivery-42@example.com>"
    assert received["X-Clarion-Delivery"] == "42"
    assert received["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Auto-Submitted"] == "auto-generated"
    assert outcome.status == SENT
    assert outcome.provider_message_id == "<clarion-delivery-42@example.com>"
    assert outcome.duration_ms is not None and outcome.duration_ms >= 0


def test_a_message_without_an_unsubscribe_link_has_no_list_unsubscribe(smtp_server):
    plain = Message(7, "email", "ann@example.org", {"subject": "S", "text": "T"})
    smtp_provider(smtp_server).send([plain])

    received = smtp_server.message_to("ann@example.org")
    assert received["List-Unsubscribe"] is None
    assert received["List-Unsubscribe-Post"] is None


def test_line_breaks_in_the_subject_cannot_add_headers(smtp_server):
    hostile = message(1, "ann@example.org", subject="Hi\r\nBcc: eve@evil.test\n\nbody", text="T")
    [outcome] = smtp_provider(smtp_server).send([hostile])

    assert outcome.status == SENT
    received = smtp_server.message_to("ann@example.org")
    assert received["Subject"] == "Hi Bcc: eve@evil.test body"
    assert received["Bcc"] is None
    assert smtp_server.recipients() == ["ann@example.org"]


def test_message_id_domain_comes_from_the_from_address_else_public_url(settings):
    settings.CLARION = {**settings.CLARION, "PUBLIC_URL": "https://notify.example.net"}
    assert email_domain("Clarion <noreply@Mail.Example.COM>") == "mail.example.com"
    assert email_domain("noreply@bücher.example") == "xn--bcher-kva.example"
    assert email_domain("no-domain") == "notify.example.net"


# -- batches and per-message outcomes ------------------------------------------------


def test_a_batch_of_20_goes_over_one_connection(smtp_server):
    outcomes = smtp_provider(smtp_server).send([message(i) for i in range(1, 21)])

    assert [o.status for o in outcomes] == [SENT] * 20
    assert [o.delivery_id for o in outcomes] == list(range(1, 21))
    assert smtp_server.connections == 1
    assert len(smtp_server.messages) == 20


def test_a_recipient_refused_with_550_fails_and_the_others_are_sent(smtp_server):
    smtp_server.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
    batch = [message(1), message(2, "gone@example.org"), message(3)]

    outcomes = smtp_provider(smtp_server).send(batch)

    assert statuses(outcomes) == [(1, SENT, ""), (2, FAILED, "smtp_550"), (3, SENT, "")]
    assert outcomes[1].status_code == 550
    assert "No such user" in outcomes[1].error
    assert smtp_server.recipients() == ["user1@example.org", "user3@example.org"]
    assert smtp_server.connections == 1


def test_a_recipient_deferred_with_451_is_retried(smtp_server):
    smtp_server.rcpt_replies["busy@example.org"] = "451 4.7.1 Greylisted, try again later"

    outcomes = smtp_provider(smtp_server).send([message(1, "busy@example.org"), message(2)])

    assert statuses(outcomes) == [(1, RETRY, "smtp_451"), (2, SENT, "")]
    assert outcomes[0].retryable


def test_a_dropped_connection_retries_that_message_and_sends_the_rest_over_a_new_one(smtp_server):
    smtp_server.drop_at_data.add("user3@example.org")

    outcomes = smtp_provider(smtp_server).send([message(i) for i in range(1, 7)])

    assert statuses(outcomes) == [
        (1, SENT, ""),
        (2, SENT, ""),
        (3, RETRY, "connection_error"),
        (4, SENT, ""),
        (5, SENT, ""),
        (6, SENT, ""),
    ]
    assert smtp_server.connections == 2
    assert "user3@example.org" not in smtp_server.recipients()


def test_a_server_that_drops_every_new_connection_leaves_the_rest_to_retry(smtp_server):
    smtp_server.drop_at_data.add("user2@example.org")
    smtp_server.after_drop = "refuse"

    outcomes = smtp_provider(smtp_server).send([message(i) for i in range(1, 6)])

    assert [o.status for o in outcomes] == [SENT, RETRY, RETRY, RETRY, RETRY]
    assert {o.reason for o in outcomes[1:]} == {"connection_error"}
    assert smtp_server.recipients() == ["user1@example.org"]


def test_a_failed_reconnect_leaves_the_rest_to_retry(smtp_server):
    smtp_server.drop_at_data.add("user2@example.org")
    smtp_server.after_drop = "stop_listening"

    outcomes = smtp_provider(smtp_server).send([message(i) for i in range(1, 5)])

    assert statuses(outcomes) == [
        (1, SENT, ""),
        (2, RETRY, "connection_error"),
        (3, RETRY, "connection_error"),
        (4, RETRY, "connection_error"),
    ]
    assert "ConnectionRefusedError" in outcomes[3].error


def test_a_message_stalled_past_the_timeout_is_retried_and_the_rest_sent(smtp_server):
    smtp_server.stall_at_data["user2@example.org"] = 3.0
    provider = smtp_provider(smtp_server, "&timeout=0.5")

    outcomes = provider.send([message(1), message(2), message(3)])

    assert statuses(outcomes) == [(1, SENT, ""), (2, RETRY, "timeout"), (3, SENT, "")]


def test_an_unreachable_server_retries_every_message():
    outcomes = smtp_provider(unused_port()).send([message(1), message(2)])

    assert statuses(outcomes) == [(1, RETRY, "connection_error"), (2, RETRY, "connection_error")]
    assert "ConnectionRefusedError" in outcomes[0].error


def test_a_server_that_never_answers_times_out_every_message():
    with SilentServer() as silent:
        outcomes = smtp_provider(silent.port, "&timeout=0.3").send([message(1), message(2)])

    assert statuses(outcomes) == [(1, RETRY, "timeout"), (2, RETRY, "timeout")]


def test_an_unusable_address_fails_that_message_and_the_others_go_on_one_connection(smtp_server):
    batch = [
        message(1),
        message(2, "ann@example.org\r\nBcc: eve@evil.test"),
        message(3, "two words@example.org"),
        message(4, "no-at-sign"),
        message(5),
    ]

    outcomes = smtp_provider(smtp_server).send(batch)

    assert statuses(outcomes) == [
        (1, SENT, ""),
        (2, FAILED, "bad_address"),
        (3, FAILED, "bad_address"),
        (4, FAILED, "bad_address"),
        (5, SENT, ""),
    ]
    assert smtp_server.recipients() == ["user1@example.org", "user5@example.org"]
    assert smtp_server.connections == 1


# -- connection settings ------------------------------------------------------------


def test_credentials_in_the_url_log_in():
    with FakeSmtpServer(login=("mailer", "p@ss word")) as server:
        provider = smtp_provider(server, auth="mailer:p%40ss%20word@")
        outcomes = provider.send([message(1), message(2)])

    assert [o.status for o in outcomes] == [SENT, SENT]
    assert server.logins == ["mailer"]


def test_a_wrong_password_retries_every_message():
    with FakeSmtpServer(login=("mailer", "right")) as server:
        outcomes = smtp_provider(server, auth="mailer:wrong@").send([message(1), message(2)])

    assert statuses(outcomes) == [(1, RETRY, "smtp_535"), (2, RETRY, "smtp_535")]
    assert server.messages == []


@pytest.mark.parametrize(
    "scheme,query,implicit", [("smtp", "&starttls=1", False), ("smtps", "", True)]
)
def test_tls_is_used_when_the_url_asks(tmp_path, monkeypatch, scheme, query, implicit):
    certificate, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # the client trusts it
    with FakeSmtpServer(
        tls=(certificate, key), implicit_tls=implicit, login=("mailer", "secret")
    ) as server:
        provider = smtp_provider(server, query, scheme=scheme, auth="mailer:secret@")
        outcomes = provider.send([message(1), message(2)])

    assert [o.status for o in outcomes] == [SENT, SENT]
    assert server.tls_used and server.tls_used[-1] is True
    assert server.logins == ["mailer"]


def test_an_untrusted_certificate_retries_every_message(tmp_path):
    certificate, key = self_signed_certificate(tmp_path)
    with FakeSmtpServer(tls=(certificate, key), implicit_tls=True) as server:
        outcomes = smtp_provider(server, scheme="smtps").send([message(1)])

    assert [o.status for o in outcomes] == [RETRY]
    assert server.messages == []


def test_the_url_sets_port_tls_from_and_timeout_defaults(settings):
    settings.DEFAULT_FROM_EMAIL = "ops@example.com"
    settings.CLARION = {**settings.CLARION, "PROVIDER_TIMEOUT_SECONDS": 7.0}

    def parse(url: str) -> SmtpProvider:
        return SmtpProvider.from_url(ProviderUrl.parse("email", url))

    plain, starttls, implicit = (
        parse("smtp://mx.example.com"),
        parse("smtp://u:p@mx.example.com?starttls=1"),
        parse("smtps://mx.example.com?from=a%40b.example&timeout=3"),
    )
    assert (plain.port, plain.starttls, plain.implicit_tls) == (25, False, False)
    assert (starttls.port, starttls.starttls, starttls.username) == (587, True, "u")
    assert (implicit.port, implicit.implicit_tls, implicit.from_email) == (465, True, "a@b.example")
    assert plain.from_email == "ops@example.com" and plain.timeout == 7.0
    assert implicit.timeout == 3.0
    with pytest.raises(ImproperlyConfigured):
        parse("smtps://mx.example.com?starttls=1")
    with pytest.raises(ImproperlyConfigured):
        parse("smtp://mx.example.com?from=not-an-address")
    with pytest.raises(ImproperlyConfigured):
        parse("smtp://?from=a%40b.example")


# -- django:// -------------------------------------------------------------------------


class EspBackend(AnymailTestBackend):
    """An anymail backend answering as an ESP would: its own message ids,
    `rejected` for addresses starting "rejected", HTTP 429 for "limited"."""

    def post_to_esp(self, payload, message):
        to = payload.recipient_emails[0]
        if to.startswith("limited"):
            raise AnymailAPIError("Too many requests", status_code=429)
        message.anymail_test_params = payload.get_params()
        mail.outbox.append(message)
        status = "rejected" if to.startswith("rejected") else "queued"
        return {
            "recipient_status": {
                to: AnymailRecipientStatus(message_id=f"esp-{len(mail.outbox)}", status=status)
            }
        }


def django_provider() -> DjangoEmailProvider:
    return DjangoEmailProvider.from_url(ProviderUrl.parse("email", f"django://?from={FROM}"))


def test_django_provider_sends_through_the_configured_smtp_backend(settings, smtp_server):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    smtp_server.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"

    outcomes = django_provider().send([message(5), message(6, "gone@example.org"), message(7)])

    assert statuses(outcomes) == [(5, SENT, ""), (6, FAILED, "smtp_550"), (7, SENT, "")]
    assert outcomes[0].provider_message_id == "<clarion-delivery-5@example.com>"
    received = smtp_server.message_to("user5@example.org")
    assert received["Message-ID"] == "<clarion-delivery-5@example.com>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert smtp_server.connections == 1


def test_django_provider_gives_anymail_the_delivery_and_keeps_the_esp_message_id(settings):
    settings.EMAIL_BACKEND = "tests.test_email_provider.EspBackend"

    outcomes = django_provider().send([message(5), message(6)])

    assert statuses(outcomes) == [(5, SENT, ""), (6, SENT, "")]
    assert [o.provider_message_id for o in outcomes] == ["esp-1", "esp-2"]
    sent = mail.outbox[0]
    assert sent.anymail_test_params["metadata"] == {"clarion_delivery": "5"}
    headers = sent.anymail_test_params["extra_headers"]
    assert headers["Message-ID"] == "<clarion-delivery-5@example.com>"
    assert headers["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert sent.anymail_test_params["text_body"] == "Plain"
    assert sent.anymail_test_params["html_body"] == "<p>Rich</p>"


def test_django_provider_fails_a_recipient_the_esp_rejects(settings):
    settings.EMAIL_BACKEND = "tests.test_email_provider.EspBackend"

    outcomes = django_provider().send([message(5, "rejected@example.org"), message(6)])

    assert statuses(outcomes) == [(5, FAILED, "rejected"), (6, SENT, "")]


def test_django_provider_fails_a_rejected_recipient_when_told_to_ignore_statuses(settings):
    settings.EMAIL_BACKEND = "tests.test_email_provider.EspBackend"
    settings.ANYMAIL = {"IGNORE_RECIPIENT_STATUS": True}

    outcomes = django_provider().send([message(5, "rejected@example.org")])

    assert statuses(outcomes) == [(5, FAILED, "rejected")]
    assert outcomes[0].provider_message_id == "esp-1"


def test_django_provider_leaves_the_rest_of_the_batch_when_the_esp_rate_limits(settings):
    settings.EMAIL_BACKEND = "tests.test_email_provider.EspBackend"

    outcomes = django_provider().send([message(5), message(6, "limited@example.org"), message(7)])

    assert statuses(outcomes) == [(5, SENT, ""), (6, RETRY, "http_429"), (7, RETRY, "http_429")]
    assert len(mail.outbox) == 1
