"""Every error under /api/ is problem+json naming the field at fault; no input makes a 500."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

EVENT = {"type": "comment.created", "recipients": ["u1"]}


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = json.loads(response.content)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    if field:
        assert field in body["errors"], body
    return body


def post_raw(
    client: APIClient, path: str, raw: bytes | str, content_type: str = "application/json"
):
    return client.generic("POST", path, raw, content_type=content_type)


def test_missing_api_key_is_401(comment_type):
    assert_problem(APIClient().post("/api/v1/events", EVENT, format="json"), 401)


def test_wrong_api_key_is_401(comment_type):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer clk_nope")
    assert_problem(client.post("/api/v1/events", EVENT, format="json"), 401)


def test_malformed_json_is_400(producer, comment_type):
    assert_problem(post_raw(producer, "/api/v1/events", b'{"type": '), 400)


def test_invalid_utf8_is_400(producer, comment_type):
    assert_problem(post_raw(producer, "/api/v1/events", b'{"type": "\xff"}'), 400)


def test_nan_is_400(producer, comment_type):
    assert_problem(
        post_raw(
            producer,
            "/api/v1/events",
            b'{"type": "comment.created", "recipients": ["a"], "data": {"x": NaN}}',
        ),
        400,
    )


def test_nul_character_is_400(producer, comment_type):
    raw = b'{"type": "comment.created", "recipients": ["a"], "data": {"x": "a\\u0000b"}}'
    assert_problem(post_raw(producer, "/api/v1/events", raw), 400)


def test_deep_nesting_is_400(producer, comment_type):
    raw = (
        '{"type": "comment.created", "recipients": ["a"], "data": '
        + "[" * 100_000
        + "]" * 100_000
        + "}"
    )
    assert_problem(post_raw(producer, "/api/v1/events", raw), 400)


def test_empty_body_is_400(producer, comment_type):
    assert_problem(post_raw(producer, "/api/v1/events", b""), 400)


def test_wrong_content_type_is_415(producer, comment_type):
    assert_problem(
        post_raw(producer, "/api/v1/events", "type=x", "application/x-www-form-urlencoded"), 415
    )


def test_body_over_the_limit_is_413(producer, comment_type, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    raw = json.dumps({**EVENT, "data": {"x": "y" * 2000}})
    assert_problem(post_raw(producer, "/api/v1/events", raw), 413)


def test_data_over_64_kib_is_413_naming_data(producer, comment_type):
    body = {**EVENT, "data": {"x": "y" * (64 * 1024)}}
    assert_problem(producer.post("/api/v1/events", body, format="json"), 413, "data")


def test_over_1000_explicit_recipients_is_422_naming_recipients(producer, comment_type):
    body = {**EVENT, "recipients": [f"u{i}" for i in range(1001)]}
    assert_problem(producer.post("/api/v1/events", body, format="json"), 422, "recipients")


def test_unknown_type_is_422_naming_type(producer, comment_type):
    assert_problem(
        producer.post("/api/v1/events", {**EVENT, "type": "nope"}, format="json"), 422, "type"
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("recipients", "u1"),
        ("recipients", []),
        ("recipients", [5]),
        ("recipients", [{"topic": ""}]),
        ("priority", "urgent"),
        ("send_at", "tomorrow"),
        ("send_at", "2026-01-01T10:00:00"),
        ("send_at", "2000-01-01T00:60:00Z"),
        ("send_at", "2000-02-30T00:00:00Z"),
        ("channels", ["pigeon"]),
        ("channels", "email"),
        ("data", [1, 2]),
        ("actor", {"id": 1}),
        ("idempotency_key", 12),
        ("type", 7),
        ("surprise", 1),
    ],
)
def test_wrong_field_is_422_naming_it(producer, comment_type, field, value):
    body = assert_problem(
        producer.post("/api/v1/events", {**EVENT, field: value}, format="json"), 422
    )
    assert any(key == field or key.startswith(f"{field}[") for key in body["errors"]), body


def test_event_that_is_not_an_object_is_422(producer, comment_type):
    assert_problem(producer.post("/api/v1/events", [1, 2], format="json"), 422)


def test_missing_required_fields_are_named(producer, comment_type):
    body = assert_problem(producer.post("/api/v1/events", {}, format="json"), 422)
    assert {"type", "recipients"} <= set(body["errors"])


def test_batch_items_fail_independently(producer, comment_type):
    response = producer.post(
        "/api/v1/events/batch",
        {"events": [EVENT, {**EVENT, "type": "nope"}, "junk", EVENT]},
        format="json",
    )
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", 422, 422, "accepted"]
    assert "type" in results[1]["errors"]


def test_batch_over_1000_events_is_422(producer, comment_type):
    assert_problem(
        producer.post("/api/v1/events/batch", {"events": [EVENT] * 1001}, format="json"),
        422,
        "events",
    )


def test_batch_without_events_list_is_422(producer, comment_type):
    assert_problem(
        producer.post("/api/v1/events/batch", {"events": "x"}, format="json"), 422, "events"
    )


def test_unknown_event_is_404(producer):
    assert_problem(producer.get("/api/v1/events/not-a-uuid"), 404)
    assert_problem(producer.get("/api/v1/events/01a216d7-ce25-7570-ab12-41a63eaff1c0"), 404)


def test_unknown_path_is_404_problem(producer):
    assert_problem(producer.get("/api/v1/no-such-thing"), 404)


def test_wrong_method_is_405_problem(producer):
    assert_problem(producer.patch("/api/v1/events", {}, format="json"), 405)


def test_bad_recipient_profile_names_each_field(producer):
    body = assert_problem(
        producer.put(
            "/api/v1/recipients/ana",
            {"email": "nope", "phone": "123", "locale": "!!", "timezone": "Mars/Base", "data": 3},
            format="json",
        ),
        422,
    )
    assert {"email", "phone", "locale", "timezone", "data"} <= set(body["errors"])


def test_bad_topic_change_is_422(producer):
    assert_problem(
        producer.put("/api/v1/topics/t1/subscribers", {"add": "ana"}, format="json"), 422, "add"
    )


def test_bad_subscriber_cursor_is_400(producer):
    producer.put("/api/v1/topics/t1/subscribers", {"add": ["ana"]}, format="json")
    assert_problem(producer.get("/api/v1/topics/t1/subscribers?cursor=abc"), 400, "cursor")


def test_bad_notification_type_is_422(producer):
    body = assert_problem(
        producer.put(
            "/api/v1/notification-types/x.y",
            {"channels": ["pigeon"], "priority": "now"},
            format="json",
        ),
        422,
    )
    assert {"channels", "priority"} <= set(body["errors"])


def test_cancel_of_a_started_event_is_409(producer, comment_type):
    event_id = producer.post("/api/v1/events", EVENT, format="json").json()["id"]
    assert_problem(producer.delete(f"/api/v1/events/{event_id}"), 409)


def test_inbox_without_token_is_401():
    assert_problem(APIClient().get("/api/v1/inbox"), 401)


def test_inbox_with_tampered_token_is_401(producer):
    token = producer.post("/api/v1/recipients/ana/token").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Recipient {token[:-2]}xx")
    assert_problem(client.get("/api/v1/inbox"), 401)


def test_inbox_bad_cursor_status_and_limit_are_400(producer):
    from tests.conftest import inbox_client

    client = inbox_client(producer, "ana")
    assert_problem(client.get("/api/v1/inbox?cursor=%%%"), 400, "cursor")
    assert_problem(client.get("/api/v1/inbox?status=new"), 400, "status")
    assert_problem(client.get("/api/v1/inbox?limit=0"), 400, "limit")
    assert_problem(client.get("/api/v1/inbox?limit=abc"), 400, "limit")


@pytest.mark.parametrize("value", [{}, [], 3, True])
def test_a_priority_of_the_wrong_type_is_422_not_500(producer, comment_type, value):
    assert_problem(
        producer.post("/api/v1/events", {**EVENT, "priority": value}, format="json"),
        422,
        "priority",
    )
    assert_problem(
        producer.put("/api/v1/notification-types/x.y", {"priority": value}, format="json"),
        422,
        "priority",
    )
