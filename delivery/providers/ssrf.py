"""The SSRF guard: webhook targets are reached only on public addresses,
checked at connect time on the address actually connected.

Checking a URL's host before the request and letting the HTTP client resolve
it again leaves a gap (DNS rebinding: the name answers a public address to
the check and 127.0.0.1 to the connect). Here the check and the connect are
one step: httpcore's network backend is replaced by one that resolves the
host itself, refuses the connection if any address the name has is refused
by the rule (`common.webhook_urls`), and connects to the checked IP. TLS
still verifies and sends SNI for the original name (httpcore does the TLS
handshake on our socket with the URL's host), and the Host header is the
URL's. Redirects are never followed (the client has follow_redirects off;
a 3xx is an outcome), so a target cannot bounce a call inward either.

A refusal raises `BlockedAddress`, which providers turn into a FAILED
outcome, reason `blocked_address`, never retried.
"""

from __future__ import annotations

import os
import socket
import threading
import typing
from collections.abc import Callable, Iterable

import httpcore
import httpx

from common.webhook_urls import (
    ALLOWED_SCHEMES,
    BLOCKED,
    address_problem,
    check_url,
    parse_ip,
    private_allowed,
    url_problem,
)
from delivery.providers.http import shared_client

__all__ = [
    "BLOCKED",
    "BlockedAddress",
    "GuardedBackend",
    "GuardedTransport",
    "Resolver",
    "address_problem",
    "check_url",
    "guarded_client",
    "resolve_host",
    "url_problem",
]

# resolve(host, port) -> the IP addresses (as text) to try, in order.
Resolver = Callable[[str, int], list[str]]

MAX_CONNECTIONS = 50
MAX_KEEPALIVE = 20


class BlockedAddress(Exception):
    """The guard refused a connection (the address rule, or a scheme)."""


def resolve_host(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order, once each."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's sync backend, connecting only to addresses the rule allows."""

    def __init__(self, resolve: Resolver | None = None):
        self._resolve = resolve or resolve_host

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of `host`; raises BlockedAddress if any is
        refused (a name with one private address is not a public name),
        httpcore.ConnectError if it does not resolve."""
        if parse_ip(host) is not None:
            found = [host]  # a literal: nothing to resolve
        else:
            try:
                found = self._resolve(host, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not found:
            raise httpcore.ConnectError(f"{host!r} has no address")
        allow = private_allowed()
        for address in found:
            problem = address_problem(address, allow_private=allow)
            if problem:
                shown = host if host == address else f"{host} ({address})"
                raise BlockedAddress(f"refused to connect to {shown}: {problem}")
        return found

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in self.addresses(host, port):
            try:
                # A numeric address: the socket layer resolves nothing more.
                return super().connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:  # refused or unreachable: the next address
                last_error = exc
        assert last_error is not None
        raise last_error

    def connect_unix_socket(self, path: str, timeout=None, socket_options=None):
        raise BlockedAddress("webhook targets are never unix sockets")


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every connection goes through GuardedBackend.

    No proxy (a proxy would connect for us, to an address we never checked),
    HTTP/1.1, pooled with keep-alive like the other providers' clients."""

    def __init__(
        self,
        *,
        resolve: Resolver | None = None,
        verify: typing.Any = True,
        limits: httpx.Limits | None = None,
    ):
        limits = limits or httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        )
        # No `proxy`: HTTPTransport then never uses one (a client given a
        # transport reads no proxy from the environment either); trust_env
        # only lets SSL_CERT_FILE / SSL_CERT_DIR name the CAs.
        super().__init__(verify=verify, limits=limits)
        # HTTPTransport takes no network backend, so its pool is rebuilt
        # with the same settings and ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(resolve),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ALLOWED_SCHEMES:
            raise BlockedAddress(f"refused the {request.url.scheme!r} scheme: only http(s)")
        return super().handle_request(request)


_transports: dict[int, GuardedTransport] = {}
_lock = threading.Lock()


def guarded_client() -> httpx.Client:
    """This process's client for untrusted targets (kept: keep-alive)."""
    pid = os.getpid()
    transport = _transports.get(pid)
    if transport is None:
        with _lock:
            transport = _transports.get(pid)
            if transport is None:
                transport = _transports[pid] = GuardedTransport()
    return shared_client(name="ssrf-guarded", transport=transport)
