"""A local APNs provider API: HTTP/2 only (cleartext, prior knowledge), token auth.

Like api.push.apple.com it speaks nothing but HTTP/2, so a client that sends
HTTP/1.1 never gets a request through (it is counted in `refused`). Each
`POST /3/device/{token}` must carry `authorization: bearer <JWT>` signed
ES256 with the key this fake wrote (`kid` = key id, `iss` = team id, `iat`
within the hour), `apns-topic`, `apns-push-type`; answers follow Apple's
documented shape: `200` with `apns-id`, or a status with `{"reason": …}`
(`410 Unregistered` with a timestamp, `400 BadDeviceToken`,
`403 ExpiredProviderToken` / `InvalidProviderToken`, `503 ServiceUnavailable`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class ApnsRecord:
    connection: int  # which TCP connection carried it (HTTP/2 multiplexes many)
    http_version: str
    method: str
    path: str
    token: str
    headers: dict[str, str]
    body: dict
    status: int
    reason: str
    jwt_claims: dict | None


@dataclass
class FakeApns:
    team_id: str = "TEAM123456"
    key_id: str = "KEY1234567"
    topic: str = "com.example.app"
    unregistered: set[str] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)
    unavailable: set[str] = field(default_factory=set)
    requests: list[ApnsRecord] = field(default_factory=list)
    connections: int = 0
    refused: int = 0  # connections that did not open with the HTTP/2 preface
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._expired: set[str] = set()
        self._seen: set[str] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeApns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self.lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def drop_connections(self) -> None:
        """Close every open connection from this side, as a network or a server
        restart does; the server keeps accepting new ones."""
        with self.lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def write_auth_key(self, path: Path) -> Path:
        """The `.p8` signing key a developer account hands out (PKCS#8 PEM)."""
        path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def expire_provider_tokens(self) -> None:
        """Every provider JWT seen so far answers 403 ExpiredProviderToken from now on."""
        with self.lock:
            self._expired |= self._seen

    @property
    def provider_tokens(self) -> set[str]:
        with self.lock:
            return set(self._seen)

    # --- the HTTP/2 server -------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
                self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        served = False
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    with self.lock:
                        if served:
                            self.errors.append(f"connection {number}: {exc!r}")
                        else:  # no HTTP/2 preface: an HTTP/1.1 client, say
                            self.refused += 1
                    return
                served = True
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, reply_headers, payload = self._handle(number, headers, bytes(body))
                        conn.send_headers(
                            event.stream_id,
                            [(":status", str(status)), *reply_headers.items()],
                            end_stream=not payload,
                        )
                        if payload:
                            conn.send_data(event.stream_id, payload, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                sock.sendall(conn.data_to_send())
        except OSError:
            return
        except Exception as exc:  # noqa: BLE001 - a fake's own bug must show in the test
            with self.lock:
                self.errors.append(f"connection {number}: {exc!r}")
        finally:
            sock.close()

    def _handle(
        self, connection: int, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        method, path = headers.get(":method", ""), headers.get(":path", "")
        token = path.removeprefix("/3/device/") if path.startswith("/3/device/") else ""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        claims, status, reason = None, 200, ""
        bearer = headers.get("authorization", "")
        with self.lock:
            if method != "POST" or not token:
                status, reason = 404, "BadPath"
            elif not bearer.startswith("bearer "):
                status, reason = 403, "MissingProviderToken"
            else:
                provider_token = bearer.removeprefix("bearer ")
                claims = self._verify(provider_token)
                if claims is None:
                    status, reason = 403, "InvalidProviderToken"
                elif provider_token in self._expired:
                    status, reason = 403, "ExpiredProviderToken"
                else:
                    self._seen.add(provider_token)
                    status, reason = self._answer(headers, token, body)
            apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
            self.requests.append(
                ApnsRecord(
                    connection, "HTTP/2", method, path, token, headers, body, status, reason, claims
                )
            )
        reply = {"apns-id": apns_id}
        if status == 200:
            return 200, reply, b""
        answer: dict[str, object] = {"reason": reason}
        if status == 410:
            answer["timestamp"] = int(time.time() * 1000)
        return status, {**reply, "content-type": "application/json"}, json.dumps(answer).encode()

    def _verify(self, provider_token: str) -> dict | None:
        try:
            header = jwt.get_unverified_header(provider_token)
            claims = jwt.decode(
                provider_token,
                self._key.public_key(),
                algorithms=["ES256"],
                options={"require": ["iss", "iat"]},
                issuer=self.team_id,
            )
        except jwt.InvalidTokenError:
            return None
        if header.get("kid") != self.key_id or abs(time.time() - claims["iat"]) > 3600:
            return None
        return claims

    def _answer(self, headers: dict[str, str], token: str, body: dict) -> tuple[int, str]:
        if not headers.get("apns-topic"):
            return 400, "MissingTopic"
        if headers["apns-topic"] != self.topic:
            return 400, "DeviceTokenNotForTopic"
        if headers.get("apns-push-type") not in {"alert", "background"}:
            return 400, "InvalidPushType"
        if not isinstance(body.get("aps"), dict):
            return 400, "PayloadEmpty"
        if token in self.unregistered:
            return 410, "Unregistered"
        if token in self.bad:
            return 400, "BadDeviceToken"
        if token in self.unavailable:
            return 503, "ServiceUnavailable"
        return 200, ""
