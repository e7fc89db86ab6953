"""A real SMTP server on 127.0.0.1 (aiosmtpd, in a thread) for the email tests.

It records what it accepted (envelope and parsed message) and the
connections that greeted it, and misbehaves on request, per recipient
address: answer RCPT with a given code (550, 451, …), drop the connection
at DATA, or stall at DATA past the client's timeout. It can also take
logins (AUTH PLAIN/LOGIN), speak STARTTLS or TLS from the first byte with
a certificate the test trusts (`self_signed_certificate`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: tuple
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        self.message = email.message_from_bytes(self.raw, policy=email.policy.default)


class FakeSmtpServer:
    def __init__(
        self,
        *,
        login: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        implicit_tls: bool = False,
    ):
        """`login`: (user, password) the server requires; `tls`: (certificate,
        key) for STARTTLS, or for TLS from the first byte with `implicit_tls`."""
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.login = login
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self.peers: list[tuple] = []  # one per connection that said EHLO/HELO
        self.logins: list[str] = []
        self.tls_used: list[bool] = []
        # address -> "550 5.1.1 …": RCPT answers for those recipients.
        self.rcpt_replies: dict[str, str] = {}
        # addresses whose DATA drops the connection (once each, then they are accepted).
        self.drop_at_data: set[str] = set()
        # address -> seconds to stall at DATA before accepting.
        self.stall_at_data: dict[str, float] = {}
        # Once true, every new connection is closed at its greeting.
        self.refuse_new_connections = False
        # What a drop at DATA does next: "" nothing, "refuse" new connections
        # (closed at their greeting), "stop_listening" (connections refused).
        self.after_drop = ""

        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        kwargs: dict = {"auth_require_tls": False}
        if login is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        if context is not None and not implicit_tls:
            kwargs["tls_context"] = context
        self._controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            ssl_context=context if implicit_tls else None,
            **kwargs,
        )

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> FakeSmtpServer:
        self._controller.start()
        with self._lock:
            # The controller's own probe connection at start is no client's.
            self.peers.clear()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> FakeSmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what it saw --------------------------------------------------------------
    @property
    def connections(self) -> int:
        with self._lock:
            return len(set(self.peers))

    def recipients(self) -> list[str]:
        with self._lock:
            return [rcpt for m in self.messages for rcpt in m.rcpt_tos]

    def message_to(self, address: str) -> EmailMessage:
        with self._lock:
            for received in self.messages:
                if address in received.rcpt_tos:
                    return received.message
        raise AssertionError(f"no message to {address}; got {self.recipients()}")

    # -- aiosmtpd handler hooks ---------------------------------------------------
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self._greeted(server, session):
            session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        if self._greeted(server, session):
            session.host_name = hostname
        return f"250 {server.hostname}"

    def _greeted(self, server, session) -> bool:
        if self.refuse_new_connections and session.peer not in self.peers:
            server.transport.close()
            return False
        with self._lock:
            if session.peer not in self.peers:
                self.peers.append(session.peer)
            self.tls_used.append(server.transport.get_extra_info("ssl_object") is not None)
        return True

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            if address in self.drop_at_data:
                self.drop_at_data.discard(address)
                server.transport.close()
                if self.after_drop == "refuse":
                    self.refuse_new_connections = True
                elif self.after_drop == "stop_listening":
                    self._controller.server.close()
                return "421 4.4.2 closing"
            stall = self.stall_at_data.get(address)
            if stall:
                await asyncio.sleep(stall)
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.original_content or envelope.content,
            session.peer,
        )
        with self._lock:
            self.messages.append(received)
        return f"250 2.0.0 Ok: queued as Q{len(self.messages)}"

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.login is None:
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        ok = (user, password) == self.login
        if ok:
            with self._lock:
                self.logins.append(user)
        return AuthResult(success=ok, handled=False)


class SilentServer:
    """Accepts TCP connections and never says a word: a server that hangs."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._socket.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._socket.close()


def unused_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return _free_port()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, written under `directory`;
    trust it by pointing SSL_CERT_FILE at the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
