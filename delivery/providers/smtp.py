"""Email over SMTP: `smtp://user:pass@host:587?starttls=1&from=…` (STARTTLS),
`smtps://user:pass@host:465` (TLS from the first byte), `smtp://host:25`.

A batch goes over one connection (Django's SMTP backend, opened once), each
message in its own SMTP transaction, so each message has its own outcome:

- accepted: SENT, `provider_message_id` its Message-ID;
- refused with 5xx (the recipient, or the message at DATA): FAILED, reason
  `smtp_<code>`; with 4xx (greylisting, a full mailbox): RETRY;
- the connection dropped or timed out: that message RETRY (it may have
  arrived; its Message-ID lets the receiver see a resend), then one new
  connection for the rest. A second drop with nothing sent since the last
  reconnect (the server is going down), or a failed reconnect, leaves the
  rest RETRY with reason `connection_error`.
- an address no server can take (a line break in it, unencodable): FAILED,
  reason `bad_address`.

Failing to connect or to log in at all makes every message RETRY: no
message is to blame, and the breaker sees the provider failing.
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend

from delivery.providers.base import FAILED, RETRY, SENT, Message, Outcome
from delivery.providers.email_message import build_email, check_from_address
from delivery.providers.registry import ProviderUrl

log = logging.getLogger(__name__)

ERROR_KEEP_CHARS = 500

# What a failed send does to the rest of the batch.
CONTINUE = "continue"  # the connection is fine: next message
RESET = "reset"  # the transaction may be half done: RSET, or reconnect if that fails
RECONNECT = "reconnect"  # the connection is gone or in an unknown state
STOP = "stop"  # the service asked us to stop (e.g. rate limited): the rest wait


@dataclass(frozen=True)
class Failure:
    """How one failed send is recorded, and what it means for the batch."""

    outcome: Outcome
    then: str = CONTINUE


def smtp_code_outcome(message: Message, code: int, text: str, duration_ms: int) -> Outcome:
    """An SMTP reply code as an outcome: 5xx fails for good, anything else is retried."""
    return Outcome(
        message.delivery_id,
        FAILED if 500 <= code < 600 else RETRY,
        reason=f"smtp_{code}",
        error=f"{code} {text}".strip()[:ERROR_KEEP_CHARS],
        status_code=code,
        duration_ms=duration_ms,
    )


def smtp_failure(message: Message, exc: BaseException, duration_ms: int) -> Failure:
    """One message's send raised `exc`: its outcome, and whether the
    connection can carry the next message."""

    def retry(reason: str) -> Outcome:
        return Outcome(
            message.delivery_id,
            RETRY,
            reason=reason,
            error=describe(exc),
            duration_ms=duration_ms,
        )

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # smtplib sent RSET after the refusal: the connection is ready for the next one.
        code, text = next(iter(exc.recipients.values()), (0, b""))
        return Failure(smtp_code_outcome(message, code, _text(text), duration_ms))
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib turns a read timeout into a disconnect; the timeout is its context.
        timed_out = isinstance(exc.__context__, TimeoutError)
        return Failure(retry("timeout" if timed_out else "connection_error"), RECONNECT)
    if isinstance(exc, smtplib.SMTPResponseException):
        # 421: the server is closing the connection (RFC 5321 §3.8).
        then = RECONNECT if exc.smtp_code == 421 else CONTINUE
        return Failure(
            smtp_code_outcome(message, exc.smtp_code, _text(exc.smtp_error), duration_ms), then
        )
    if isinstance(exc, smtplib.SMTPException):
        return Failure(retry("provider_error"), RECONNECT)
    if isinstance(exc, TimeoutError):
        return Failure(retry("timeout"), RECONNECT)
    if isinstance(exc, OSError):
        return Failure(retry("connection_error"), RECONNECT)
    if isinstance(exc, ValueError):  # incl. UnicodeError, Django's BadHeaderError
        # It may have failed between MAIL FROM and DATA: start the next one afresh.
        outcome = Outcome(
            message.delivery_id,
            FAILED,
            reason="bad_address",
            error=describe(exc),
            duration_ms=duration_ms,
        )
        return Failure(outcome, RESET)
    return Failure(retry("provider_error"), RECONNECT)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def send_batch(
    backend: BaseEmailBackend,
    messages: list[Message],
    *,
    from_email: str,
    failure: Callable[[Message, BaseException, int], Failure] = smtp_failure,
    prepare: Callable[[EmailMultiAlternatives, Message], None] | None = None,
    read_sent: Callable[[EmailMultiAlternatives, Message, int], Outcome] | None = None,
) -> list[Outcome]:
    """Send `messages` one by one over one open `backend`; an outcome each, in order.

    `failure` reads an exception, `prepare` adds to an email before it goes
    (anymail metadata), `read_sent` reads a send that raised nothing."""
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    try:
        backend.open()
    except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome
        # No message is to blame for a server we cannot reach or log in to
        # (even a 535 for the password): all of them wait for a later attempt.
        read = failure(messages[0], exc, _ms(started)).outcome
        log.warning("email: cannot open %s: %r", type(backend).__name__, exc)
        return [
            Outcome(
                m.delivery_id,
                RETRY,
                reason=read.reason,
                error=read.error,
                status_code=read.status_code,
            )
            for m in messages
        ]

    progress = True  # the server has answered since the last (re)connect
    try:
        for index, message in enumerate(messages):
            t0 = time.perf_counter()
            try:
                email = build_email(message, from_email=from_email, connection=backend)
                if prepare is not None:
                    prepare(email, message)
            except ValueError as exc:
                outcomes.append(
                    Outcome(
                        message.delivery_id,
                        FAILED,
                        reason="bad_address",
                        error=describe(exc),
                        duration_ms=_ms(t0),
                    )
                )
                continue
            try:
                backend.send_messages([email])
            except Exception as exc:  # noqa: BLE001 - every failure becomes this message's outcome
                result = failure(message, exc, _ms(t0))
                outcomes.append(result.outcome)
                if result.then == CONTINUE or (result.then == RESET and _reset(backend)):
                    progress = True  # the server answered: the connection works
                    continue
                rest = messages[index + 1 :]
                if result.then == STOP:
                    outcomes.extend(
                        replace(result.outcome, delivery_id=m.delivery_id, duration_ms=None)
                        for m in rest
                    )
                    return outcomes
                if not rest:
                    break
                cause = _reconnect(backend) if progress else exc
                if cause is not None:
                    log.warning("email: giving up on %d messages after %r", len(rest), cause)
                    outcomes.extend(_waiting(m, "connection_error", cause) for m in rest)
                    return outcomes
                progress = False
                continue
            progress = True
            outcomes.append(
                read_sent(email, message, _ms(t0))
                if read_sent is not None
                else Outcome(
                    message.delivery_id,
                    SENT,
                    duration_ms=_ms(t0),
                    provider_message_id=email.extra_headers["Message-ID"],
                )
            )
    finally:
        _close(backend)
    return outcomes


def _reset(backend: BaseEmailBackend) -> bool:
    """End a half-done SMTP transaction (RSET); False if the connection is unusable."""
    connection = getattr(backend, "connection", None)
    if connection is None or not hasattr(connection, "rset"):
        return True  # not SMTP, or nothing to reset
    try:
        connection.rset()
    except Exception:  # noqa: BLE001 - an unusable connection is reconnected
        return False
    return True


def _reconnect(backend: BaseEmailBackend) -> BaseException | None:
    """A fresh connection; the exception if none could be opened."""
    _close(backend)
    try:
        backend.open()
    except Exception as exc:  # noqa: BLE001 - reported as the rest's outcome
        _close(backend)
        return exc
    return None


def _close(backend: BaseEmailBackend) -> None:
    try:
        backend.close()
    except Exception:  # noqa: BLE001 - a connection we are done with may fail to say goodbye
        log.debug("email: closing %s failed", type(backend).__name__, exc_info=True)
        if hasattr(backend, "connection"):
            backend.connection = None


def _waiting(message: Message, reason: str, exc: BaseException) -> Outcome:
    return Outcome(message.delivery_id, RETRY, reason=reason, error=describe(exc))


def describe(exc: BaseException) -> str:
    """An exception as attempt-log text (some libraries' __str__ can raise)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001
        text = repr(exc)
    return text[:ERROR_KEEP_CHARS]


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class SmtpProvider:
    """Sends email to an SMTP server (a relay, an ESP's SMTP endpoint)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        implicit_tls: bool = False,
        from_email: str,
        timeout: float,
    ):
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.implicit_tls = starttls, implicit_tls
        self.from_email = from_email
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: ProviderUrl) -> SmtpProvider:
        where = f"CLARION_PROVIDERS {url.channel}={url.scheme}://{url.host}"
        if not url.host:
            raise ImproperlyConfigured(f"{where}: the URL names no host")
        implicit_tls = url.scheme == "smtps"
        starttls = url.flag("starttls")
        if implicit_tls and starttls:
            raise ImproperlyConfigured(f"{where}: smtps:// is TLS already; drop ?starttls=1")
        try:
            from_email = check_from_address(
                url.query.get("from") or settings.DEFAULT_FROM_EMAIL, where=where
            )
            timeout = float(
                url.query.get("timeout") or settings.CLARION["PROVIDER_TIMEOUT_SECONDS"]
            )
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
        if not 0 < timeout <= 600:
            raise ImproperlyConfigured(f"{where}: timeout must be 0 to 600 seconds")
        port = url.port or (465 if implicit_tls else 587 if starttls else 25)
        return cls(
            host=url.host,
            port=port,
            username=url.username,
            password=url.password,
            starttls=starttls,
            implicit_tls=implicit_tls,
            from_email=from_email,
            timeout=timeout,
        )

    def backend(self) -> EmailBackend:
        """A backend for one batch (one connection); never shared between threads."""
        return EmailBackend(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.starttls,
            use_ssl=self.implicit_tls,
            timeout=self.timeout,
            fail_silently=False,
        )

    def send(self, messages: list[Message]) -> list[Outcome]:
        if not messages:
            return []
        return send_batch(self.backend(), messages, from_email=self.from_email)
