"""A local server speaking Twilio's Messages API, for the SMS provider's tests.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP basic auth
(account sid : auth token) and a form (`To`, `From` or `MessagingServiceSid`,
`Body`, `StatusCallback`) answers 201 and the message resource Twilio
returns, or Twilio's error JSON (`{"code", "message", "more_info",
"status"}`). Every request is recorded with its headers and form; TCP
connections and the most requests in flight at once are counted.

Failures are set up per test: numbers answered with an error code, the next
N calls or every Nth call answered with a status (and Retry-After), a delay
before every answer. `status_callback()` builds the signed form Twilio posts
to a message's StatusCallback; `post_status()` posts it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote

import httpx
from twilio.request_validator import RequestValidator

from tests.fakes import ThreadedHttpFake

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
FROM_NUMBER = "+15550001111"
API_VERSION = "2010-04-01"
_MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")

# Twilio's own wording for the errors the fake answers.
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    status: int  # what the fake answered
    idempotency_key: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Failure:
    status: int
    retry_after: str | None
    remaining: int = 0  # for fail_next
    every: int = 0  # for fail_every


class TwilioFake(ThreadedHttpFake):
    """Start with `with TwilioFake() as fake:` (or start()/stop())."""

    def __init__(
        self, *, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN, delay: float = 0.0
    ):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.delay = delay  # seconds before every answer (a slow or hanging API)
        self.requests: list[Recorded] = []
        self.messages: dict[str, dict] = {}  # sid -> the resource answered, plus its form
        self.error_numbers: dict[str, int] = {}  # To number -> Twilio error code (400)
        self.connections = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._calls = 0
        self._next: _Failure | None = None
        self._every: _Failure | None = None
        self._by_key: dict[str, str] = {}  # Idempotency-Key -> sid: a repeat is not sent again
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> TwilioFake:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._serve(server, "twilio-fake")
        return self

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def provider_url(
        self,
        *,
        from_number: str = FROM_NUMBER,
        messaging_service_sid: str = "",
        auth_token: str | None = None,
        **query: str,
    ) -> str:
        """The CLARION_PROVIDERS URL of a Twilio provider sending here."""
        sender = (
            f"messaging_service_sid={messaging_service_sid}"
            if messaging_service_sid
            else f"from={quote(from_number)}"
        )
        extra = "".join(f"&{name}={quote(str(value))}" for name, value in query.items())
        token = self.auth_token if auth_token is None else auth_token
        return (
            f"twilio://{self.account_sid}:{quote(token)}@api.twilio.com?{sender}"
            f"&base_url={quote(self.base_url)}{extra}"
        )

    # --- failures to answer --------------------------------------------------
    def fail_next(self, count: int, *, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next `count` calls with `status` (and Retry-After)."""
        with self._lock:
            self._next = _Failure(status, retry_after, remaining=count)

    def fail_every(self, n: int, *, status: int = 503, retry_after: str | None = None) -> None:
        """Answer every `n`th call (the nth, 2nth, …) with `status`; 0 stops."""
        with self._lock:
            self._calls = 0
            self._every = _Failure(status, retry_after, every=n) if n else None

    def reject_number(self, number: str, code: int = 21211) -> None:
        """Answer 400 with this Twilio error code for messages to `number`."""
        self.error_numbers[number] = code

    # --- status callbacks ----------------------------------------------------
    def status_callback(
        self,
        sid: str,
        status: str,
        *,
        error_code: int | str | None = None,
        url: str | None = None,
        auth_token: str | None = None,
    ) -> tuple[str, dict[str, str], str]:
        """(url, form, signature) of the callback Twilio posts when message
        `sid` reaches `status`; url defaults to the message's StatusCallback."""
        message = self.messages.get(sid, {})
        url = url or message.get("status_callback") or ""
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.get("from") or "",
            "To": message.get("to") or "",
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        if message.get("messaging_service_sid"):
            form["MessagingServiceSid"] = message["messaging_service_sid"]
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        token = self.auth_token if auth_token is None else auth_token
        return url, form, RequestValidator(token).compute_signature(url, form)

    def post_status(self, sid: str, status: str, **kwargs) -> httpx.Response:
        """Post the signed status callback, as Twilio does."""
        url, form, signature = self.status_callback(sid, status, **kwargs)
        return httpx.post(
            url,
            data=form,
            timeout=10,
            headers={
                "X-Twilio-Signature": signature,
                "I-Twilio-Idempotency-Token": uuid.uuid4().hex,
                "User-Agent": "TwilioProxy/1.1",
            },
        )

    # --- the API -------------------------------------------------------------
    def _answer(self, handler: _Handler) -> tuple[int, dict, dict[str, str]]:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode("utf-8", "replace") if length else ""
        form = {name: values[-1] for name, values in parse_qs(raw, keep_blank_values=True).items()}
        status, body, headers = self._decide(handler, form)
        with self._lock:
            self.requests.append(
                Recorded(
                    method=handler.command,
                    path=handler.path,
                    headers=dict(handler.headers.items()),
                    form=form,
                    status=status,
                    idempotency_key=handler.headers.get("Idempotency-Key", ""),
                )
            )
        return status, body, headers

    def _decide(self, handler: _Handler, form: dict[str, str]) -> tuple[int, dict, dict]:
        match = _MESSAGES_PATH.fullmatch(handler.path.split("?", 1)[0])
        if handler.command != "POST" or not match:
            return _error(404, 20404)
        if match.group(1) != self.account_sid or not self._authorized(handler):
            return _error(401, 20003)
        injected = self._injected_failure()
        if injected is not None:
            status, retry_after = injected
            code = 20429 if status == 429 else 20500
            answer = _error(status, code)
            if retry_after is not None:
                answer[2]["Retry-After"] = retry_after
            return answer
        to = form.get("To", "")
        if not to:
            return _error(400, 21604)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21603)
        if not form.get("Body"):
            return _error(400, 21602)
        if to in self.error_numbers:
            return _error(400, self.error_numbers[to], to=to)
        if not _E164.fullmatch(to):
            return _error(400, 21211, to=to)
        key = handler.headers.get("Idempotency-Key", "")
        with self._lock:
            sid = self._by_key.get(key) if key else None
            if sid is None:
                sid = "SM" + uuid.uuid4().hex
                self.messages[sid] = self._resource(sid, form)
                if key:
                    self._by_key[key] = sid
        resource = {k: v for k, v in self.messages[sid].items() if k != "status_callback"}
        return 201, resource, {}

    def _authorized(self, handler: _Handler) -> bool:
        scheme, _, encoded = (handler.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (self.account_sid, self.auth_token)

    def _injected_failure(self) -> tuple[int, str | None] | None:
        with self._lock:
            self._calls += 1
            if self._next is not None and self._next.remaining > 0:
                self._next.remaining -= 1
                return self._next.status, self._next.retry_after
            if self._every is not None and self._calls % self._every.every == 0:
                return self._every.status, self._every.retry_after
        return None

    def _resource(self, sid: str, form: dict[str, str]) -> dict:
        now = formatdate(usegmt=False)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(form.get("Body", "")) // 160))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form.get("To", ""),
            "uri": uri,
            "status_callback": form.get("StatusCallback", ""),
        }


def _error(status: int, code: int, **fmt: str) -> tuple[int, dict, dict[str, str]]:
    return (
        status,
        {
            "code": code,
            "message": ERROR_MESSAGES.get(code, "Error").format(**fmt),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        {},
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: TwilioFake

    def handle_error(self, request, client_address) -> None:
        # A client that timed out and hung up mid-answer: expected in the tests.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the tests can count connections
    # Headers and body go out in two writes: without this, Nagle's algorithm
    # holds the body until the client's delayed ACK (~40 ms a response).
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake.connections += 1

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        self._respond()

    def do_GET(self) -> None:
        self._respond()

    def _respond(self) -> None:
        fake = self.server.fake
        with fake._lock:
            fake._in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
        try:
            status, body, headers = fake._answer(self)
            if fake.delay:
                time.sleep(fake.delay)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Twilio-Request-Id", "RQ" + uuid.uuid4().hex)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with fake._lock:
                fake._in_flight -= 1
