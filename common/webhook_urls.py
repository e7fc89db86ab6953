"""Which webhook targets Clarion may call: the address rule, without the network.

Webhook URLs (a recipient's `data.webhook_url`, a producer's status webhook
endpoint) are untrusted input: a URL naming 127.0.0.1 or the cloud metadata
service would turn Clarion into a proxy into its own network (SSRF). Only
http(s) is allowed, and no address that is not public: private, loopback,
link-local, multicast, reserved, unspecified, shared (100.64/10), the
documentation and benchmarking ranges, and IPv6 forms that embed one of
those (IPv4-mapped, NAT64, 6to4). `CLARION["WEBHOOK_ALLOW_PRIVATE"]` lifts
the rule for development and tests, except for the metadata addresses,
which nothing needs to call.

This module judges addresses and URLs only. The guard that matters runs at
connect time on the address actually connected (`delivery/providers/ssrf.py`),
so a name that resolves to a private address, now or after a DNS change,
is refused too; `check_url` here lets the API refuse what is wrong on its
face (a literal private IP, a `file://` URL) when the URL is registered.
It lives in `common` so the API layer (`notifications`) can use it without
importing `delivery`.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, …
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are IPv4

# The reason names of the outcomes (Outcome.reason, a status call's last_error).
BLOCKED = "blocked_address"  # the address rule refused it
BAD_ADDRESS = "bad_address"  # not a URL Clarion can call at all

_CLASSES = (
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_unspecified", "the unspecified address"),
    ("is_reserved", "a reserved address"),
    ("is_private", "a private address"),
)


def private_allowed() -> bool:
    """The development switch, read at call time (tests change it)."""
    return bool(settings.CLARION.get("WEBHOOK_ALLOW_PRIVATE"))


def parse_ip(text: str) -> IPAddress | None:
    """`text` as an IP address (an IPv6 zone `%eth0` dropped), or None."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a resolver reads from a numeric host that is not
    dotted-quad: `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`
    (inet_aton's forms, which getaddrinfo accepts), else None."""
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def address_problem(address: str | IPAddress, *, allow_private: bool | None = None) -> str | None:
    """Why the rule refuses to connect to this IP address; None if allowed.
    `allow_private` defaults to the setting."""
    ip = parse_ip(address) if isinstance(address, str) else address
    if ip is None:
        return f"{address!r} is not an IP address"
    if allow_private is None:
        allow_private = private_allowed()
    return _problem(ip, lift=allow_private)


def _problem(ip: IPAddress, *, lift: bool) -> str | None:
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _problem(embedded, lift=lift)
            return f"{ip} embeds {embedded}: {inner}" if inner else None
    if lift:
        return None
    for attribute, what in _CLASSES:
        if getattr(ip, attribute):
            return f"{ip} is {what}"
    if ip in SHARED_SPACE:
        return f"{ip} is in the shared address space (100.64.0.0/10)"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def url_problem(url: object) -> tuple[str, str] | None:
    """(reason, message) when a webhook URL is refused before any network
    use: BAD_ADDRESS for what is not an http(s) URL with a host, BLOCKED
    for a host that is a literal address the rule refuses; None when the
    URL may be tried (its name is still checked at connect time)."""
    if not isinstance(url, str) or not url:
        return BAD_ADDRESS, "The URL must be a non-empty string."
    if len(url) > MAX_URL_LENGTH:
        return BAD_ADDRESS, f"The URL must be at most {MAX_URL_LENGTH} characters."
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return BAD_ADDRESS, "The URL must not contain spaces or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return BAD_ADDRESS, "The URL is malformed."
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return BLOCKED, "Only http and https URLs are allowed."
    host = (parts.hostname or "").rstrip(".")  # "localhost." is localhost
    if not host:
        return BAD_ADDRESS, "The URL has no host."
    ip = parse_ip(host) or legacy_ipv4(host)
    if ip is not None:
        problem = address_problem(ip)
        return (BLOCKED, f"The URL's host {problem}.") if problem else None
    if not private_allowed() and (host == "localhost" or host.endswith(".localhost")):
        return BLOCKED, "The URL's host is a loopback name."
    return None


def check_url(url: object) -> str | None:
    """What is wrong with a webhook URL given to the API (None: acceptable)."""
    problem = url_problem(url)
    return problem[1] if problem else None
