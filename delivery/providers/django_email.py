"""Email through Django's configured backend: `email=django://` (query: `from`).

Whatever `EMAIL_BACKEND` names sends it, so every django-anymail ESP
(Postmark, SES, Mailgun, SendGrid, …) works by setting. The emails are the
ones `smtp://` sends (`email_message.py`), over one backend connection per
batch, each with its own outcome.

With an anymail backend each email also carries anymail metadata
`{"clarion_delivery": "<id>"}`, which the ESP hands back in its tracking
events (`delivery/hooks/email_events.py` finds the delivery by it), and the
outcome reads anymail's status for the recipient: `rejected`, `invalid` or
`failed` fail it, `sent`, `queued` or `scheduled` send it, and the ESP's
message id becomes `provider_message_id`. Errors of the ESP's API: 429, 408
and 5xx and no answer at all are retried (a 429 leaves the rest of the
batch to a later attempt), other 4xx fail. A backend that speaks SMTP
(Django's own) is read like `smtp://`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives, get_connection

from delivery.providers.base import FAILED, RETRY, SENT, Message, Outcome
from delivery.providers.email_message import check_from_address
from delivery.providers.http import RETRYABLE_STATUSES, retry_after_seconds
from delivery.providers.registry import ProviderUrl
from delivery.providers.smtp import (
    CONTINUE,
    ERROR_KEEP_CHARS,
    RECONNECT,
    STOP,
    Failure,
    describe,
    send_batch,
    smtp_failure,
)

try:  # django-anymail is a dependency, but this provider works without it
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
except ImportError:  # pragma: no cover
    AnymailAPIError = AnymailRecipientsRefused = None

# anymail's recipient statuses that mean the ESP will not send it.
REFUSED_STATUSES = frozenset({"rejected", "invalid", "failed"})
MAX_MESSAGE_ID_CHARS = 255  # Delivery.provider_message_id


class DjangoEmailProvider:
    def __init__(self, *, from_email: str):
        self.from_email = from_email

    @classmethod
    def from_url(cls, url: ProviderUrl) -> DjangoEmailProvider:
        try:
            from_email = check_from_address(
                url.query.get("from") or settings.DEFAULT_FROM_EMAIL,
                where=f"CLARION_PROVIDERS {url.channel}=django://",
            )
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
        return cls(from_email=from_email)

    def send(self, messages: list[Message]) -> list[Outcome]:
        if not messages:
            return []
        return send_batch(
            get_connection(fail_silently=False),
            messages,
            from_email=self.from_email,
            failure=_failure,
            prepare=_prepare,
            read_sent=_read_sent,
        )


def _prepare(email: EmailMultiAlternatives, message: Message) -> None:
    # Read by anymail backends only; other backends never look at it.
    email.metadata = {"clarion_delivery": str(message.delivery_id)}


def _read_sent(email: EmailMultiAlternatives, message: Message, duration_ms: int) -> Outcome:
    status = getattr(email, "anymail_status", None)
    if status is None:  # not anymail: what the backend took has our Message-ID
        return Outcome(
            message.delivery_id,
            SENT,
            duration_ms=duration_ms,
            provider_message_id=email.extra_headers["Message-ID"],
        )
    recipient = _recipient_status(status, message)
    state = getattr(recipient, "status", None)
    esp_id = _esp_message_id(getattr(recipient, "message_id", None) or status.message_id)
    if state in REFUSED_STATUSES:
        return Outcome(
            message.delivery_id,
            FAILED,
            reason=state,
            error=f"ESP status {state}",
            duration_ms=duration_ms,
            provider_message_id=esp_id,
            response=repr(status)[:ERROR_KEEP_CHARS],
        )
    return Outcome(
        message.delivery_id,
        SENT,
        duration_ms=duration_ms,
        provider_message_id=esp_id or email.extra_headers["Message-ID"],
        response=repr(status)[:ERROR_KEEP_CHARS],
    )


def _failure(message: Message, exc: BaseException, duration_ms: int) -> Failure:
    if AnymailRecipientsRefused is not None and isinstance(exc, AnymailRecipientsRefused):
        email_status = getattr(getattr(exc, "email_message", None), "anymail_status", None)
        recipient = _recipient_status(email_status, message) if email_status else None
        state = getattr(recipient, "status", None) or "rejected"
        return Failure(
            Outcome(
                message.delivery_id,
                FAILED,
                reason=state,
                error=describe(exc),
                duration_ms=duration_ms,
            )
        )
    if AnymailAPIError is not None and isinstance(exc, AnymailAPIError):
        code = exc.status_code
        error = describe(exc)
        if code is None:  # no answer from the ESP
            return Failure(
                Outcome(
                    message.delivery_id,
                    RETRY,
                    reason="connection_error",
                    error=error,
                    duration_ms=duration_ms,
                ),
                RECONNECT,
            )
        retryable = code >= 500 or code in RETRYABLE_STATUSES
        response = getattr(exc, "response", None)
        retry_after = getattr(response, "headers", {}).get("Retry-After") if retryable else None
        outcome = Outcome(
            message.delivery_id,
            RETRY if retryable else FAILED,
            reason=f"http_{code}",
            error=error,
            status_code=code,
            duration_ms=duration_ms,
            retry_after=retry_after_seconds(retry_after),
        )
        return Failure(outcome, STOP if code == 429 else CONTINUE)
    return smtp_failure(message, exc, duration_ms)


def _recipient_status(status, message: Message):
    recipients = getattr(status, "recipients", None) or {}
    wanted = message.address.strip().lower()
    for address, recipient in recipients.items():
        if str(address).lower() == wanted:
            return recipient
    return next(iter(recipients.values()), None)


def _esp_message_id(value: object) -> str:
    if value is None or isinstance(value, set | frozenset):
        return ""  # one recipient per email: a set would be another ESP's quirk
    return str(value)[:MAX_MESSAGE_ID_CHARS]
