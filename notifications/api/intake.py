"""Event intake on ASGI: `POST /api/v1/events` and `/events/batch` with group commit.

These two endpoints carry the producers' whole load, so the web server answers
them without Django's request cycle: a raw ASGI handler reads the body,
authenticates the key, validates each event (the same service functions as
the DRF views, which stay for the OpenAPI schema and for WSGI deployments)
and hands the valid events to a group committer. The committer writes all
events waiting at that moment in one transaction on a dedicated thread, so
under load one COPY and one COMMIT serve many requests; an idle server still
writes each event at once. Every request is answered only after its event is
committed, so a 202 means durable, as before.

Measured here (`python -m bench ingest`): the same stack's Django path
answered ~500 single events/s and a bare ASGI "hello" ~50,000/s on 2 cores;
see README.md, "Choice of server", for this path's figures.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http.request import split_domain_port, validate_host
from prometheus_client import Counter, Histogram

from common.errors import ClarionError, Overloaded, TooLarge
from notifications.api.auth import (
    INVALID_KEY,
    WWW_AUTHENTICATE,
    BadCredentials,
    Producer,
    bearer_credential,
    producer_cached,
    producer_for_key,
)
from notifications.api.parsers import json_loads_strict
from notifications.api.problems import PROBLEM_CONTENT_TYPE, problem_body, problem_from_error
from notifications.selectors import notification_types_by_key, notification_types_cached
from notifications.services import backpressure
from notifications.services.events import (
    Accepted,
    ParsedEvent,
    batch_bodies,
    event_parse,
    events_accept_parsed,
)
from notifications.services.ratelimits import AsyncRateLimiter

log = logging.getLogger(__name__)

ASGIApp = Callable[
    [dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]
]
SINGLE_PATH = "/api/v1/events"
BATCH_PATH = "/api/v1/events/batch"
JSON = b"application/json"

REQUESTS = Counter(
    "clarion_intake_requests",
    "Event intake requests answered by the ASGI intake",
    ["endpoint", "status"],
)
LATENCY = Histogram(
    "clarion_intake_seconds",
    "Event intake request time, body read to answer",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GROUP_SIZE = Histogram(
    "clarion_intake_group_events",
    "Events written per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000, 4000),
)


class HttpProblem(Exception):
    def __init__(
        self, status: int, detail: str, *, errors: dict | None = None, headers: list | None = None
    ):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers or []


class DeadlineExceeded(Exception):
    """The answer deadline passed before the request's events could commit;
    nothing of them is stored."""


class OutcomeUnknown(Exception):
    """The database took the COMMIT but has not confirmed it in time (it froze
    mid-commit): the events may or may not be stored."""


# How long past its deadline a request waits for a COMMIT already sent.
COMMIT_GRACE_SECONDS = 0.3


class CommitGate:
    """Where the event loop's deadline and a writer's COMMIT meet, once.

    The writer calls `enter_commit` just before COMMIT; a waiter whose deadline
    passed calls `abandon`. Whichever comes first wins: an abandoned write
    rolls back when its thread gets control again (a frozen database), so its
    503 says "not stored" truthfully. A write already committing is waited
    for a little longer; a database that froze mid-COMMIT leaves the outcome
    unknown, and the answer says so (503, `"outcome": "unknown"`: retry with
    the same Idempotency-Key).
    """

    RUNNING, COMMITTING, ABANDONED = range(3)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = self.RUNNING

    def enter_commit(self) -> None:
        with self._lock:
            if self._state == self.ABANDONED:
                raise DeadlineExceeded("abandoned before commit")
            self._state = self.COMMITTING

    def abandon(self) -> bool:
        """True when the write will not commit (now or already abandoned)."""
        with self._lock:
            if self._state == self.RUNNING:
                self._state = self.ABANDONED
            return self._state == self.ABANDONED


@dataclass
class _Waiting:
    api_key_id: int
    events: list[ParsedEvent]
    future: asyncio.Future
    gate: CommitGate | None = None  # set when a flush takes it
    abandoned: bool = False  # its deadline passed before any flush took it


class GroupCommitter:
    """Writes the events of concurrent requests together.

    `submit` queues a request's events and waits, at most until its deadline.
    Up to `writers` flushes run at once on their own threads (each with its
    own database connection); a flush takes everything queued when it
    starts, so batches grow exactly as fast as requests arrive while a write
    is in flight.
    """

    def __init__(self, writers: int, max_events: int) -> None:
        self._writers = writers
        self._max_events = max_events
        self._executor = ThreadPoolExecutor(
            max_workers=writers, thread_name_prefix="clarion-intake"
        )
        self._pending: deque[_Waiting] = deque()
        self._active = 0

    async def submit(
        self, api_key_id: int, events: list[ParsedEvent], *, deadline: float
    ) -> list[Accepted | ClarionError]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(api_key_id, events, loop.create_future())
        self._pending.append(waiting)
        if self._active < self._writers:
            self._active += 1
            loop.create_task(self._drain())
        try:
            return await asyncio.wait_for(
                asyncio.shield(waiting.future), max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            if waiting.gate is None:
                waiting.abandoned = True  # never taken: no flush will write it
                raise DeadlineExceeded("no writer took the events in time") from None
            if waiting.gate.abandon():
                raise DeadlineExceeded("the write did not reach its commit in time") from None
        try:  # committing: its outcome is on the way, unless the database froze mid-COMMIT
            return await asyncio.wait_for(asyncio.shield(waiting.future), COMMIT_GRACE_SECONDS)
        except TimeoutError:
            raise OutcomeUnknown("the COMMIT was not confirmed in time") from None

    async def run(
        self, function: Callable[..., Any], *args: Any, deadline: float | None = None
    ) -> Any:
        """Run a database call on a writer thread (e.g. an uncached key lookup)."""
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._executor, _with_fresh_connection, function, *args)
        if deadline is None:
            return await call
        try:
            return await asyncio.wait_for(call, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise DeadlineExceeded("the database did not answer in time") from None

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: list[_Waiting] = []
                events = 0
                while self._pending and (
                    not batch or events + len(self._pending[0].events) <= self._max_events
                ):
                    waiting = self._pending.popleft()
                    if waiting.abandoned or waiting.future.done():
                        continue
                    batch.append(waiting)
                    events += len(waiting.events)
                if not batch:
                    continue
                gate = CommitGate()
                for waiting in batch:
                    waiting.gate = gate
                GROUP_SIZE.observe(events)
                try:
                    results = await self.run(
                        _write_groups, [(w.api_key_id, w.events) for w in batch], gate
                    )
                except Exception as error:  # noqa: BLE001 - every waiter must get an answer
                    for waiting in batch:
                        if not waiting.future.done():
                            waiting.future.set_exception(error)
                    continue
                for waiting, result in zip(batch, results):
                    if waiting.future.done():
                        continue
                    if isinstance(result, BaseException):
                        waiting.future.set_exception(result)
                    else:
                        waiting.future.set_result(result)
        finally:
            self._active -= 1


def _with_fresh_connection(function: Callable[..., Any], *args: Any) -> Any:
    # What Django's request_started/finished signals do around a request:
    # drop a connection that broke or outlived CONN_MAX_AGE.
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


def _write_groups(
    requests: list[tuple[int, list[ParsedEvent]]], gate: CommitGate | None = None
) -> list[list[Accepted | ClarionError] | Exception]:
    """One transaction per producer key in the group; results per request, in
    order. A transaction that fails fails only its own requests: the others'
    events are committed and must be answered as accepted."""
    by_key: dict[int, list[int]] = {}
    for position, (api_key_id, _) in enumerate(requests):
        by_key.setdefault(api_key_id, []).append(position)
    answers: list[list[Accepted | ClarionError] | Exception] = [[] for _ in requests]
    for api_key_id, positions in by_key.items():
        flat = [event for position in positions for event in requests[position][1]]
        try:
            results = iter(
                events_accept_parsed(
                    api_key_id=api_key_id,
                    events=flat,
                    before_commit=gate.enter_commit if gate else None,
                )
            )
        except Exception as error:  # noqa: BLE001 - answered as that request's failure (503 or 500)
            for position in positions:
                answers[position] = error
            continue
        for position in positions:
            answers[position] = [next(results) for _ in requests[position][1]]
    return answers


class EventIntake:
    """ASGI middleware: answers event intake itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        intake = settings.CLARION
        self.committer = GroupCommitter(intake["INTAKE_WRITERS"], intake["INTAKE_GROUP_MAX_EVENTS"])
        self.rate_limiter = AsyncRateLimiter()
        self.backlog = backpressure.BacklogGauge()
        self.limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self.deadline_seconds = intake["INTAKE_DEADLINE_SECONDS"]
        self.allowed_hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not self.allowed_hosts:
            self.allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]  # as Django does in DEBUG

    async def __call__(self, scope: dict, receive, send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in (SINGLE_PATH, BATCH_PATH)
        ):
            await self._handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _handle(self, scope: dict, receive, send) -> None:
        started = time.perf_counter()
        endpoint = "batch" if scope["path"] == BATCH_PATH else "single"
        try:
            status, body = await self._answer(scope, receive, endpoint)
            headers: list = []
            content_type = JSON
        except HttpProblem as problem:
            status = problem.status
            body = problem_body(problem.status, problem.detail, errors=problem.errors)
            headers, content_type = problem.headers, PROBLEM_CONTENT_TYPE.encode()
        except ClarionError as error:
            status, body = error.status, problem_from_error(error)
            headers = [(name.lower().encode(), val.encode()) for name, val in error.headers.items()]
            content_type = PROBLEM_CONTENT_TYPE.encode()
        except DatabaseError:
            log.exception("event intake could not reach the database")
            status = 503
            body = problem_body(503, "The database is unavailable; retry shortly.")
            headers, content_type = [(b"retry-after", b"1")], PROBLEM_CONTENT_TYPE.encode()
        except DeadlineExceeded as error:
            log.warning("event intake answered 503 at its deadline: %s", error)
            status = 503
            body = {
                **problem_body(
                    503, "The database did not answer in time; nothing was stored. Retry shortly."
                ),
                "outcome": "not_stored",
            }
            headers, content_type = [(b"retry-after", b"1")], PROBLEM_CONTENT_TYPE.encode()
        except OutcomeUnknown as error:
            log.warning("event intake answered 503 with its outcome unknown: %s", error)
            status = 503
            body = {
                **problem_body(
                    503,
                    "The database did not confirm the commit in time;"
                    " the events may have been stored."
                    " Retry with the same Idempotency-Key to get the stored answer.",
                ),
                "outcome": "unknown",
            }
            headers, content_type = [(b"retry-after", b"1")], PROBLEM_CONTENT_TYPE.encode()
        except Exception:  # noqa: BLE001 - a bug: answer like Django's 500 handler, never drop the request
            log.exception("event intake failed")
            status = 500
            body = problem_body(500, "The server failed; the error is logged.")
            headers, content_type = [], PROBLEM_CONTENT_TYPE.encode()
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-length", str(len(payload)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        REQUESTS.labels(endpoint, str(status)).inc()
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.deadline_seconds

    async def _answer(self, scope: dict, receive, endpoint: str) -> tuple[int, Any]:
        headers = dict(scope["headers"])
        if not validate_host(
            split_domain_port(headers.get(b"host", b"").decode("latin-1"))[0], self.allowed_hosts
        ):
            raise HttpProblem(400, "Bad request.")  # Django's DisallowedHost answer under /api/
        producer = await self._producer(
            headers.get(b"authorization", b"").decode("latin-1"), self._deadline()
        )
        if endpoint == "single":
            await self._take(producer, 1)  # before reading the body, as DRF's throttle does
        content_type = headers.get(b"content-type", b"")
        raw = await self._body(headers, receive, unsupported=_unsupported(content_type))
        document = json_loads_strict(raw)
        deadline = self._deadline()  # counted from the whole request's arrival
        if endpoint == "single":
            idempotency_key = headers.get(b"idempotency-key")
            parsed = event_parse(
                document,
                header_idempotency_key=idempotency_key.decode("latin-1")
                if idempotency_key
                else None,
            )
            refusal = (await self._refusals([parsed], deadline))[0]
            if refusal is not None:
                raise refusal
            result = (await self._commit(producer, [parsed], deadline))[0]
            if isinstance(result, ClarionError):
                raise result
            return 202, result.as_response()
        bodies = batch_bodies(document)
        await self._take(producer, len(bodies))  # one token per event, as the DRF batch view
        return 207, {"results": await self._batch(producer, bodies, deadline)}

    async def _take(self, producer: Producer, cost: int) -> None:
        rate = producer.rate
        if rate is not None:
            await self.rate_limiter.take(
                api_key_id=producer.api_key_id, key_name=producer.name, rate=rate, cost=cost
            )

    async def _batch(self, producer: Producer, bodies: list[object], deadline: float) -> list[dict]:
        answers: list[dict | None] = [None] * len(bodies)
        valid: list[tuple[int, ParsedEvent]] = []
        for index, body in enumerate(bodies):
            try:
                valid.append((index, event_parse(body)))
            except ClarionError as error:
                answers[index] = problem_from_error(error)
        refused = await self._refusals([parsed for _, parsed in valid], deadline)
        for (index, _), refusal in zip(valid, refused):
            if refusal is not None:
                answers[index] = problem_from_error(refusal)
        valid = [entry for entry, refusal in zip(valid, refused) if refusal is None]
        written = (
            await self._commit(producer, [parsed for _, parsed in valid], deadline) if valid else []
        )
        for (index, _), result in zip(valid, written):
            answers[index] = (
                problem_from_error(result)
                if isinstance(result, ClarionError)
                else result.as_response()
            )
        return answers  # type: ignore[return-value]

    async def _refusals(
        self, events: list[ParsedEvent], deadline: float
    ) -> list[Overloaded | None]:
        """Backpressure (services/backpressure.py), decided on the loop from this
        process's backlog reading; only a type missing from the type cache is
        looked up, on a writer thread."""
        if not backpressure.may_refuse(events):
            return [None] * len(events)
        ages = await self.backlog.ages_async()
        keys = backpressure.type_keys_needed(events, ages)
        types = notification_types_cached(keys)
        if len(types) < len(keys):
            missing = keys - types.keys()
            found = await self.committer.run(notification_types_by_key, missing, deadline=deadline)
            types.update(found)
        return backpressure.refusals(events, ages, types)

    async def _commit(
        self, producer: Producer, events: list[ParsedEvent], deadline: float
    ) -> list[Accepted | ClarionError]:
        return await self.committer.submit(producer.api_key_id, events, deadline=deadline)

    async def _producer(self, authorization: str, deadline: float) -> Producer:
        unauthorized = [(b"www-authenticate", WWW_AUTHENTICATE.encode())]
        try:
            credential = bearer_credential(authorization)
        except BadCredentials as error:
            raise HttpProblem(401, str(error), headers=unauthorized) from error
        producer = producer_cached(credential) or await self.committer.run(
            producer_for_key, credential, deadline=deadline
        )
        if producer is None:
            raise HttpProblem(401, INVALID_KEY, headers=unauthorized)
        return producer

    async def _body(self, headers: dict, receive, *, unsupported: HttpProblem | None) -> bytes:
        """The whole body, at most `limit` bytes; a non-empty body must be JSON
        (the order of checks is the DRF views': media type before size)."""
        too_large = TooLarge(f"The request body is larger than {self.limit} bytes.")
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.limit:
            raise unsupported or too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpProblem(400, "The client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise unsupported or too_large
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        if size and unsupported:
            raise unsupported
        return b"".join(chunks)


def _unsupported(content_type: bytes) -> HttpProblem | None:
    if content_type.split(b";")[0].strip().lower() == JSON:
        return None
    return HttpProblem(
        415, f'Unsupported media type "{content_type.decode("latin-1")}" in request.'
    )
