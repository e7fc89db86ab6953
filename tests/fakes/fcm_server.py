"""A local FCM HTTP v1 server and the OAuth 2.0 token endpoint in front of it.

It speaks the documented wire format: the service account's signed JWT
assertion (RS256, checked against the key this fake wrote into the service
account file) is exchanged at `/token` for a bearer token;
`POST /v1/projects/{project}/messages:send` answers `{"name": …}` or the v1
error shape (`{"error": {"code", "message", "status", "details": [FcmError]}}`).
Tokens the test names answer UNREGISTERED, INVALID_ARGUMENT or UNAVAILABLE.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
# google-auth signs the assertion for Google's endpoint whatever the file's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLIENT_EMAIL = "clarion-test@fake-project.iam.gserviceaccount.com"


@dataclass(frozen=True)
class SendRecord:
    project: str
    token: str
    headers: dict[str, str]
    body: dict
    status: int
    answer: dict


@dataclass
class FakeFcm:
    """The server's state; the handler reads and changes it under `lock`."""

    project: str = "fake-project"
    token_lifetime: int = 3600
    unregistered: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    # token -> Retry-After seconds: answered 503 UNAVAILABLE.
    unavailable: dict[str, int] = field(default_factory=dict)
    sends: list[SendRecord] = field(default_factory=list)
    token_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._valid_tokens: set[str] = set()
        self._issued = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def start(self) -> FakeFcm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_service_account(self, path: Path) -> Path:
        """A service-account key file whose `token_uri` is this server."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.project,
                    "private_key_id": "fake-key-1",
                    "private_key": pem,
                    "client_email": CLIENT_EMAIL,
                    "client_id": "1234567890",
                    "token_uri": self.token_uri,
                }
            )
        )
        return path

    def revoke_access_tokens(self) -> None:
        """Every bearer token issued so far is refused from now on (401)."""
        with self.lock:
            self._valid_tokens.clear()

    # --- the two endpoints -------------------------------------------------

    def issue_token(self, form: dict[str, list[str]]) -> tuple[int, dict]:
        if form.get("grant_type") != [JWT_BEARER] or not form.get("assertion"):
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(
                form["assertion"][0],
                self._key.public_key(),
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                issuer=CLIENT_EMAIL,
            )
        except jwt.InvalidTokenError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if FCM_SCOPE not in claims.get("scope", "").split():
            return 400, {"error": "invalid_scope"}
        with self.lock:
            self.token_requests += 1
            self._issued += 1
            token = f"ya29.fake-access-token-{self._issued}"
            self._valid_tokens.add(token)
        return 200, {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
        }

    def send(self, project: str, headers: dict[str, str], body: dict) -> tuple[int, dict, dict]:
        """(status, JSON answer, extra headers) for one messages:send call."""
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        token = (body.get("message") or {}).get("token", "")
        with self.lock:
            authorized = bearer in self._valid_tokens
            status, answer, extra = self._answer(project, token, authorized)
            self.sends.append(SendRecord(project, token, headers, body, status, answer))
        return status, answer, extra

    def _answer(self, project: str, token: str, authorized: bool) -> tuple[int, dict, dict]:
        if not authorized:
            return 401, _error(401, "UNAUTHENTICATED", "Request had invalid authentication."), {}
        if project != self.project:
            return (
                403,
                _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
                {},
            )
        if token in self.unregistered:
            return (
                404,
                _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
                {},
            )
        if token in self.invalid or not token:
            error = _error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
            error["error"]["details"].append(
                {
                    "@type": BAD_REQUEST,
                    "fieldViolations": [
                        {"field": "message.token", "description": "Invalid registration token"}
                    ],
                }
            )
            return 400, error, {}
        if token in self.unavailable:
            retry_after = {"Retry-After": str(self.unavailable[token])}
            return (
                503,
                _error(503, "UNAVAILABLE", "The service is unavailable.", "UNAVAILABLE"),
                retry_after,
            )
        message_number = sum(1 for s in self.sends if s.status == 200) + 1
        return 200, {"name": f"projects/{project}/messages/0:{message_number}%fake"}, {}


def _error(code: int, status: str, message: str, error_code: str | None = None) -> dict:
    details = [{"@type": FCM_ERROR, "errorCode": error_code}] if error_code else []
    return {"error": {"code": code, "message": message, "status": status, "details": details}}


def _handler_for(fake: FakeFcm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the pooled client expects

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path == "/token":
                status, answer = fake.issue_token(parse_qs(raw.decode()))
                self._reply(status, answer, {})
                return
            prefix, suffix = "/v1/projects/", "/messages:send"
            if self.path.startswith(prefix) and self.path.endswith(suffix):
                project = self.path[len(prefix) : -len(suffix)]
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._reply(400, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload"), {})
                    return
                self._reply(*fake.send(project, headers, body))
                return
            self._reply(404, _error(404, "NOT_FOUND", "No such method."), {})

        def _reply(self, status: int, answer: dict, extra: dict[str, str]) -> None:
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler
