"""The email a delivery sends, as Django's EmailMultiAlternatives: one shape
for every email provider (`smtp://`, `django://`).

- Parts: the text part, and the HTML part as its multipart/alternative when
  there is HTML; an HTML-only message gets a text part derived from it.
- `Message-ID: <clarion-delivery-{id}@{domain}>` (domain of the From address,
  else of PUBLIC_URL): a receiver, a bounce or an ESP event names the
  delivery with it, and a resend after a crash carries the same id.
- `X-Clarion-Delivery: {id}` for people reading raw mail and ESP logs.
- `List-Unsubscribe` + `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
  (RFC 8058) when the message has an unsubscribe link.
- `Auto-Submitted: auto-generated` (RFC 3834): out-of-office robots do not answer.

Rendered text reaches headers only through the subject, whose line breaks
and other control characters are folded to spaces, so no template or event
data can add a header.
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from delivery.providers.base import Message
from templates_app.plaintext import text_from_html

_CONTROL_RUNS = re.compile(r"[\s\x00-\x1f\x7f]*[\x00-\x1f\x7f][\s\x00-\x1f\x7f]*")
# A bare address (the profile's): no display name, no spaces, no controls, one line.
_NOT_IN_ADDRESS = re.compile(r"[\s<>,;\x00-\x1f\x7f]")
_SAFE_URL = re.compile(r"^https?://[^\s<>\"\x00-\x1f\x7f]+$")
MAX_SUBJECT_CHARS = 998  # RFC 5322's line length; longer subjects are cut, not refused


def header_text(value: object) -> str:
    """One header line: every run of whitespace holding a control character
    (CR, LF, NUL, …) becomes one space."""
    text = _CONTROL_RUNS.sub(" ", str(value or "")).strip()
    return text[:MAX_SUBJECT_CHARS]


def email_domain(from_email: str) -> str:
    """The domain Message-IDs are made under: the From address's, else PUBLIC_URL's host."""
    address = parseaddr(from_email)[1]
    domain = address.rpartition("@")[2].strip().strip(".") if "@" in address else ""
    if not domain:
        domain = urlsplit(settings.CLARION["PUBLIC_URL"]).hostname or "localhost"
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return "localhost"


def build_email(message: Message, *, from_email: str, connection=None) -> EmailMultiAlternatives:
    """The email for one message (not sent). Raises ValueError for an address
    that is not one bare address (spaces, line breaks, several, no "@"); the
    backend refuses others when sending, also as ValueError."""
    address = message.address.strip()
    local, _, domain = address.rpartition("@")
    if not local or not domain or _NOT_IN_ADDRESS.search(address):
        raise ValueError(f"invalid recipient address {message.address!r}")
    content = message.content or {}
    html = str(content.get("html") or "")
    text = str(content.get("text") or "") or (text_from_html(html) if html else "")
    headers = {
        "Message-ID": message.message_id(email_domain(from_email)),
        "X-Clarion-Delivery": str(message.delivery_id),
        "Auto-Submitted": "auto-generated",
    }
    if message.unsubscribe_url and _SAFE_URL.match(message.unsubscribe_url):
        headers["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = EmailMultiAlternatives(
        subject=header_text(content.get("subject")),
        body=text,
        from_email=from_email,
        to=[address],
        headers=headers,
        connection=connection,
    )
    if html:
        email.attach_alternative(html, "text/html")
    return email


def check_from_address(from_email: str, *, where: str) -> str:
    """A configured From address, checked once when the provider is built."""
    if (
        not from_email
        or any(ch in from_email for ch in "\r\n\x00")
        or "@" not in parseaddr(from_email)[1]
    ):
        raise ValueError(f"{where}: {from_email!r} is not an email address")
    return from_email
