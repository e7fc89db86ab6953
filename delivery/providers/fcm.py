"""Firebase Cloud Messaging, HTTP v1 API: one `messages:send` call per device token.

`fcm://PROJECT_ID?credentials=/secrets/fcm.json[&base_url=…][&concurrency=8]`.
The service-account file gives the OAuth 2.0 access token (google-auth signs
the JWT assertion and exchanges it at the file's `token_uri`); the token is
kept for the process and refreshed only when it has expired or FCM answers
401. A message's tokens (and a batch's messages) are sent a few at a time on
the shared pooled client.

Also here, shared with APNs (which imports it): the per-token results folded
into one outcome per message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar
from urllib.parse import quote

import google.auth.exceptions
import httpx
from django.core.exceptions import ImproperlyConfigured
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import service_account

from delivery.providers.base import FAILED, RETRY, SENT, Message, Outcome
from delivery.providers.http import (
    RESPONSE_KEEP_CHARS,
    outcome_from_response,
    shared_client,
    timed,
    timeout,
)
from delivery.providers.registry import ProviderUrl

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
INVALID_TOKEN = "invalid_token"
DEFAULT_CONCURRENCY = 8

T = TypeVar("T")
R = TypeVar("R")


# --- shared by the push providers ----------------------------------------------


class TokenPool:
    """A few threads that send one batch's device tokens at once.

    One executor per process: a forked worker child builds its own rather
    than inherit threads that do not exist in it."""

    def __init__(self, size: int = DEFAULT_CONCURRENCY):
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None

    def map(self, function: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`function` of each item, results in the items' order."""
        if len(items) <= 1 or self.size == 1:
            return [function(item) for item in items]
        return list(self._get().map(function, items))

    def _get(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pid != pid or self._executor is None:
            with self._lock:
                if self._pid != pid or self._executor is None:
                    self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="push")
                    self._pid = pid
        return self._executor


def invalid_token_outcome(
    message: Message, response: httpx.Response, duration_ms: int, why: str
) -> Outcome:
    """One token's answer saying the token is dead (to be removed)."""
    return Outcome(
        message.delivery_id,
        FAILED,
        reason=INVALID_TOKEN,
        error=f"{response.status_code} {why}".strip(),
        status_code=response.status_code,
        response=response.text[:RESPONSE_KEEP_CHARS],
        duration_ms=duration_ms,
    )


def outcome_from_tokens(message: Message, results: Iterable[tuple[str, Outcome]]) -> Outcome:
    """One outcome for a message sent to several tokens, from each token's.

    Sent if any token took it (the first such token's message id); otherwise
    retried if any token's failure is worth retrying (the longest Retry-After);
    otherwise failed: `invalid_token` when every token is dead. Dead tokens
    are listed in `invalid_targets` whatever the status, so they are pruned."""
    results = list(results)
    if not results:
        return Outcome(message.delivery_id, FAILED, reason="no_address", error="No device tokens.")
    invalid = tuple(token for token, outcome in results if outcome.reason == INVALID_TOKEN)
    outcomes = [outcome for _, outcome in results]
    longest = max((o.duration_ms or 0 for o in outcomes), default=0)
    summary = f"{len(results)} tokens: " + ", ".join(
        f"{count} {status}"
        for status, count in _counts(
            INVALID_TOKEN if o.reason == INVALID_TOKEN else o.status for o in outcomes
        )
    )
    sent = [o for o in outcomes if o.status == SENT]
    if sent:
        error = "" if len(sent) == len(results) else summary
        return replace(sent[0], invalid_targets=invalid, duration_ms=longest, error=error)
    retry = [o for o in outcomes if o.status == RETRY]
    if retry:
        worst = max(retry, key=lambda o: o.retry_after or 0.0)
        error = worst.error if len(results) == 1 else f"{summary}; {worst.error}"
        return replace(worst, invalid_targets=invalid, duration_ms=longest, error=error)
    failed = [o for o in outcomes if o.reason != INVALID_TOKEN]
    first = failed[0] if failed else outcomes[0]
    error = first.error if len(results) == 1 else f"{summary}; {first.error}"
    return replace(first, invalid_targets=invalid, duration_ms=longest, error=error)


def _counts(values: Iterable[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts.items())


def concurrency_from(
    url: ProviderUrl, *, default: int = DEFAULT_CONCURRENCY, maximum: int = 64
) -> int:
    """`?concurrency=`: how many of a batch's tokens are in flight at once."""
    raw = url.query.get("concurrency") or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ImproperlyConfigured(
            f"{url.scheme}://…?concurrency= must be 1 to {maximum}, not {raw!r}"
        )
    return int(raw)


def batch_outcome(message: Message, status: str, reason: str, error: str) -> Outcome:
    return Outcome(message.delivery_id, status, reason=reason, error=error[:500])


# --- FCM ------------------------------------------------------------------------


class _TimedAuthRequest(GoogleAuthRequest):
    """google-auth's requests transport with the providers' timeout on the token call
    (its own default is two minutes)."""

    def __init__(self, seconds: float):
        super().__init__()
        self._timeout = seconds

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        return super().__call__(
            url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs
        )


class FcmProvider:
    platform = "fcm"

    def __init__(
        self,
        *,
        credentials_path: str,
        project_id: str = "",
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = DEFAULT_CONCURRENCY,
    ):
        try:
            self._credentials = service_account.Credentials.from_service_account_file(
                credentials_path, scopes=[FCM_SCOPE]
            )
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"fcm://: cannot read the service account file {credentials_path!r}: {exc}"
            ) from exc
        self.project_id = project_id or self._credentials.project_id or ""
        if not self.project_id:
            raise ImproperlyConfigured("fcm://PROJECT_ID: no project id in the URL or the file.")
        self.send_url = (
            f"{base_url.rstrip('/')}/v1/projects/{quote(self.project_id, safe='')}/messages:send"
        )
        self._token_lock = threading.Lock()
        self._auth_request: tuple[int, GoogleAuthRequest] | None = None
        self._pool = TokenPool(concurrency)

    @classmethod
    def from_url(cls, url: ProviderUrl) -> FcmProvider:
        path = url.query.get("credentials", "")
        if not path:
            raise ImproperlyConfigured(
                "fcm://PROJECT_ID needs ?credentials=/path/to/service-account.json"
            )
        return cls(
            credentials_path=path,
            project_id=url.host,
            base_url=url.query.get("base_url") or DEFAULT_BASE_URL,
            concurrency=concurrency_from(url),
        )

    def send(self, messages: list[Message]) -> list[Outcome]:
        try:
            access_token = self._access_token()
        except google.auth.exceptions.GoogleAuthError as exc:
            # No token, no call: the whole batch waits (and the breaker sees it).
            error = f"OAuth token: {exc!r}"
            return [batch_outcome(m, RETRY, "oauth_error", error) for m in messages]
        jobs = [(message, token) for message in messages for token in message.targets]
        results = self._pool.map(lambda job: self._send_one(*job, access_token), jobs)
        by_message: dict[int, list[tuple[str, Outcome]]] = {m.delivery_id: [] for m in messages}
        for (message, token), outcome in zip(jobs, results, strict=True):
            by_message[message.delivery_id].append((token, outcome))
        return [outcome_from_tokens(m, by_message[m.delivery_id]) for m in messages]

    # --- one token --------------------------------------------------------------

    def _send_one(self, message: Message, token: str, access_token: str) -> Outcome:
        body = {"message": self._payload(message, token)}
        outcome = timed(message, lambda: self._post(body, message, access_token), self._read)
        if outcome.status_code != 401:
            return outcome
        # The token was revoked or rotated early: one fresh token, one more try.
        try:
            fresh = self._access_token(refused=access_token)
        except google.auth.exceptions.GoogleAuthError as exc:
            return batch_outcome(message, RETRY, "oauth_error", f"OAuth token: {exc!r}")
        return timed(message, lambda: self._post(body, message, fresh), self._read)

    def _post(self, body: dict, message: Message, access_token: str) -> httpx.Response:
        return shared_client().post(
            self.send_url,
            json=body,
            headers={
                "Authorization": f"Bearer {access_token}",
                "Idempotency-Key": message.idempotency_key,
            },
        )

    @staticmethod
    def _payload(message: Message, token: str) -> dict:
        content = message.content or {}
        notification = {name: str(content[name]) for name in ("title", "body") if content.get(name)}
        # FCM data values must be strings.
        data = {"delivery_id": str(message.delivery_id)}
        if message.event_id:
            data["event_id"] = message.event_id
        if message.type_key:
            data["type"] = message.type_key
        return {"token": token, "notification": notification, "data": data}

    @staticmethod
    def _read(message: Message, response: httpx.Response, duration_ms: int) -> Outcome:
        if response.status_code == 200:
            name = _json(response).get("name", "")
            return outcome_from_response(
                message, response, duration_ms, provider_message_id=str(name)
            )
        error = _json(response).get("error")
        error = error if isinstance(error, dict) else {}
        code = _fcm_error_code(error)
        if response.status_code == 404 and code == "UNREGISTERED":
            return invalid_token_outcome(message, response, duration_ms, "UNREGISTERED")
        if response.status_code == 400 and _names_the_token(error, code):
            return invalid_token_outcome(message, response, duration_ms, "INVALID_ARGUMENT")
        outcome = outcome_from_response(message, response, duration_ms)
        label = code or error.get("status")
        return replace(outcome, error=f"{outcome.error} {label}") if label else outcome

    # --- the OAuth token --------------------------------------------------------

    def _access_token(self, *, refused: str | None = None) -> str:
        """A valid access token: the kept one, or a new one when it expired or is
        `refused` (FCM answered 401 to it). Threads that meet the same 401 at
        once wait for one refresh and share its token."""
        credentials = self._credentials
        token = credentials.token
        if token and credentials.valid and token != refused:
            return token
        with self._token_lock:
            token = credentials.token
            if token and credentials.valid and token != refused:
                return token
            credentials.refresh(self._google_request())
            return credentials.token

    def _google_request(self) -> GoogleAuthRequest:
        # Its requests.Session pools sockets: one per process, never a parent's.
        pid = os.getpid()
        if self._auth_request is None or self._auth_request[0] != pid:
            seconds = timeout().connect or 10.0
            self._auth_request = (pid, _TimedAuthRequest(seconds))
        return self._auth_request[1]


def _json(response: httpx.Response) -> dict:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _fcm_error_code(error: dict) -> str:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            return str(detail.get("errorCode") or "")
    return ""


def _names_the_token(error: dict, code: str) -> bool:
    """An INVALID_ARGUMENT about the registration token, not another field (a
    too-large payload is INVALID_ARGUMENT too and must not prune the token)."""
    if code != "INVALID_ARGUMENT" and error.get("status") != "INVALID_ARGUMENT":
        return False
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == BAD_REQUEST_TYPE:
            fields = {
                v.get("field") for v in detail.get("fieldViolations") or () if isinstance(v, dict)
            }
            if fields:
                return "message.token" in fields
    return "registration token" in str(error.get("message", "")).lower()
