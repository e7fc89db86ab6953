"""Event intake on the ASGI server (group commit) answers exactly as the DRF views do."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from django.db import connection
from rest_framework.test import APIClient

from notifications.models import Event, IdempotencyKey
from tests.workers import database_url_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

GOOD = {"type": "comment.created", "recipients": ["ana"], "actor": "bo", "data": {"comment": "hi"}}
JSON = "application/json"


def _json(value) -> bytes:
    return orjson.dumps(value)


# (name, path, content type, body, authorization: "key" = the test key)
CASES = [
    ("no credentials", "/api/v1/events", JSON, _json(GOOD), None),
    ("another scheme", "/api/v1/events", JSON, _json(GOOD), "Basic YTpi"),
    ("empty bearer", "/api/v1/events", JSON, _json(GOOD), "Bearer"),
    ("unknown key", "/api/v1/events", JSON, _json(GOOD), "Bearer clk_nope"),
    ("text body", "/api/v1/events", "text/plain", b"type=comment.created", "key"),
    ("empty body", "/api/v1/events", JSON, b"", "key"),
    ("malformed json", "/api/v1/events", JSON, b'{"type": ', "key"),
    (
        "nan",
        "/api/v1/events",
        JSON,
        b'{"type": "comment.created", "recipients": ["a"], "data": {"x": NaN}}',
        "key",
    ),
    (
        "nul character",
        "/api/v1/events",
        JSON,
        b'{"type": "comment.created", "recipients": ["a\\u0000"]}',
        "key",
    ),
    ("array body", "/api/v1/events", JSON, _json([GOOD]), "key"),
    ("missing fields", "/api/v1/events", JSON, _json({}), "key"),
    (
        "wrong types",
        "/api/v1/events",
        JSON,
        _json({"type": 5, "recipients": "ana", "priority": "urgent"}),
        "key",
    ),
    ("unknown type", "/api/v1/events", JSON, _json({**GOOD, "type": "no.such"}), "key"),
    (
        "too many recipients",
        "/api/v1/events",
        JSON,
        _json({**GOOD, "recipients": [f"u{n}" for n in range(1001)]}),
        "key",
    ),
    (
        "data over 64 KiB",
        "/api/v1/events",
        JSON,
        _json({**GOOD, "data": {"x": "y" * 70_000}}),
        "key",
    ),
    ("accepted", "/api/v1/events", "application/json; charset=utf-8", _json(GOOD), "key"),
    ("batch not an object", "/api/v1/events/batch", JSON, _json([GOOD]), "key"),
    ("batch empty", "/api/v1/events/batch", JSON, _json({"events": []}), "key"),
    ("batch too long", "/api/v1/events/batch", JSON, _json({"events": [GOOD] * 1001}), "key"),
    (
        "batch mixed",
        "/api/v1/events/batch",
        JSON,
        _json(
            {
                "events": [
                    GOOD,
                    {"type": "no.such", "recipients": ["a"]},
                    7,
                    {**GOOD, "idempotency_key": "b1"},
                ]
            }
        ),
        "key",
    ),
]


def _without_ids(value):
    if isinstance(value, dict):
        return {k: ("<id>" if k == "id" else _without_ids(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _answer(status: int, content_type: str, www_authenticate: str | None, body: bytes) -> tuple:
    return status, content_type, www_authenticate, _without_ids(orjson.loads(body))


def test_a_host_outside_allowed_hosts_is_refused_as_django_refuses_it(
    asgi_server, api_key, comment_type
):
    headers = {"Authorization": f"Bearer {api_key[1]}", "Host": "evil.example"}
    served = httpx.post(f"{asgi_server.base_url}/api/v1/events", json=GOOD, headers=headers)
    viewed = httpx.get(f"{asgi_server.base_url}/api/v1/events/x", headers=headers)

    assert served.status_code == viewed.status_code == 400
    assert served.json() == viewed.json()
    assert Event.objects.count() == 0


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_intake_answers_every_request_as_the_drf_view_does(
    asgi_server, api_key, comment_type, clean_redis, case
):
    _, path, content_type, body, authorization = case
    headers = {"Content-Type": content_type}
    if authorization:
        headers["Authorization"] = (
            f"Bearer {api_key[1]}" if authorization == "key" else authorization
        )

    served = httpx.post(asgi_server.base_url + path, content=body, headers=headers, timeout=10)
    django_headers = (
        {"HTTP_AUTHORIZATION": headers["Authorization"]} if "Authorization" in headers else {}
    )
    viewed = APIClient().generic("POST", path, body, content_type=content_type, **django_headers)

    assert _answer(
        served.status_code,
        served.headers["content-type"],
        served.headers.get("www-authenticate"),
        served.content,
    ) == _answer(
        viewed.status_code, viewed["Content-Type"], viewed.get("WWW-Authenticate"), viewed.content
    )


def test_an_accepted_event_is_in_the_table_when_the_answer_arrives(
    asgi_server, api_key, comment_type, clean_redis
):
    response = httpx.post(
        f"{asgi_server.base_url}/api/v1/events",
        json=GOOD,
        headers={"Authorization": f"Bearer {api_key[1]}"},
    )
    assert response.status_code == 202
    assert Event.objects.filter(id=response.json()["id"], type=comment_type).exists()


def test_concurrent_requests_share_commits_and_duplicates_still_make_one_event(
    asgi_server, api_key, comment_type, clean_redis
):
    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=asgi_server.base_url,
            headers={"Authorization": f"Bearer {api_key[1]}"},
            limits=httpx.Limits(max_connections=64),
            timeout=30,
        ) as http:
            distinct = [
                http.post("/api/v1/events", json={**GOOD, "idempotency_key": f"k{n}"})
                for n in range(300)
            ]
            duplicates = [
                http.post("/api/v1/events", json=GOOD, headers={"Idempotency-Key": "same"})
                for _ in range(20)
            ]
            return await asyncio.gather(*distinct, *duplicates)

    responses = asyncio.run(scenario())

    assert {response.status_code for response in responses} == {202}
    stored = IdempotencyKey.objects.get(key="same").event_id
    assert {response.json()["id"] for response in responses[300:]} == {str(stored)}
    assert Event.objects.count() == 301
    assert IdempotencyKey.objects.count() == 301
    metrics = httpx.get(f"{asgi_server.base_url}/metrics").text
    assert 'clarion_intake_requests_total{endpoint="single",status="202"}' in metrics


def test_a_storm_of_identical_requests_answers_every_one_with_the_stored_event(
    asgi_server, api_key, comment_type, clean_redis
):
    """50 identical requests at once, five rounds: whichever group commit
    each lands in, every answer names the one event that exists."""
    headers = {"Authorization": f"Bearer {api_key[1]}"}

    async def storm(key: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=asgi_server.base_url,
            headers=headers,
            limits=httpx.Limits(max_connections=50),
            timeout=30,
        ) as http:
            return await asyncio.gather(
                *[
                    http.post("/api/v1/events", json=GOOD, headers={"Idempotency-Key": key})
                    for _ in range(50)
                ]
            )

    for round_number in range(5):
        responses = asyncio.run(storm(f"storm-{round_number}"))
        stored = str(IdempotencyKey.objects.get(key=f"storm-{round_number}").event_id)
        assert {response.status_code for response in responses} == {202}
        assert {response.json()["id"] for response in responses} == {stored}
        assert (
            httpx.get(f"{asgi_server.base_url}/api/v1/events/{stored}", headers=headers).status_code
            == 200
        )
    assert Event.objects.count() == 5


def test_a_reused_key_with_another_body_is_a_conflict_on_the_intake(
    asgi_server, api_key, comment_type, clean_redis
):
    headers = {"Authorization": f"Bearer {api_key[1]}", "Idempotency-Key": "once"}
    first = httpx.post(f"{asgi_server.base_url}/api/v1/events", json=GOOD, headers=headers)
    again = httpx.post(f"{asgi_server.base_url}/api/v1/events", json=GOOD, headers=headers)
    other = httpx.post(
        f"{asgi_server.base_url}/api/v1/events", json={**GOOD, "actor": "cy"}, headers=headers
    )

    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 409)
    assert again.json() == first.json()
    assert other.headers["content-type"] == "application/problem+json"
    assert "idempotency_key" in other.json()["errors"]


def test_intake_without_a_database_answers_503_and_retry_after(django_db_setup, settings):
    from tests.servers import AsgiServer

    unreachable = database_url_for({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": "1"})
    server = AsgiServer(database_url=unreachable, redis_url=settings.REDIS_URL)
    server.start()
    try:
        response = httpx.post(
            f"{server.base_url}/api/v1/events", json=GOOD, headers={"Authorization": "Bearer clk_x"}
        )
    finally:
        server.stop()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"


def test_a_failed_commit_fails_only_its_own_producers_requests(api_key, comment_type):
    from django.db import IntegrityError

    from notifications.api.intake import _write_groups
    from notifications.services.events import event_parse

    answers = _write_groups(
        [
            (api_key[0].id, [event_parse(GOOD)]),
            (999_999, [event_parse(GOOD)]),
            (api_key[0].id, [event_parse(GOOD)]),
        ]
    )

    assert isinstance(answers[1], IntegrityError)  # no such API key: its transaction rolls back
    accepted = [answers[0][0].id, answers[2][0].id]
    assert Event.objects.filter(id__in=accepted).count() == 2


def test_intake_reconnects_after_its_database_connections_are_cut(
    asgi_server, api_key, comment_type, clean_redis
):
    headers = {"Authorization": f"Bearer {api_key[1]}"}
    assert (
        httpx.post(f"{asgi_server.base_url}/api/v1/events", json=GOOD, headers=headers).status_code
        == 202
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        assert cursor.fetchone()[0] >= 1

    after = [
        httpx.post(f"{asgi_server.base_url}/api/v1/events", json=GOOD, headers=headers)
        for _ in range(3)
    ]

    assert [response.status_code for response in after] == [202, 202, 202]
    assert Event.objects.count() == 4
