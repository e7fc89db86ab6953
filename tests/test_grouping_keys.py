"""Grouping keys (`digest.key`, `throttle.key`): one template language, checked
when a type is PUT, bounded like every template when rendered."""

from __future__ import annotations

import time

import pytest

from templates_app.keys import KEY_MAX_CHARS, key_render

pytestmark = pytest.mark.django_db

IN_APP = {"in_app": {"en": {"title": "Hi"}}}


def put(producer, body: dict):
    body = {"templates": IN_APP, **body}
    return producer.put("/api/v1/notification-types/x.y", body, format="json")


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("digest.key", {"digest": {"window_seconds": 60, "key": "{{ post_id"}}),
        ("throttle.key", {"throttle": {"limit": 1, "window_seconds": 60, "key": "{% if %}"}}),
    ],
)
def test_a_key_that_does_not_compile_is_422_naming_its_field(producer, field, body):
    response = put(producer, body)
    assert (response.status_code, response["Content-Type"]) == (422, "application/problem+json")
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    "body",
    [
        {"digest": {"window_seconds": 60, "key": "{{ post_id | lower }}"}},
        {"throttle": {"limit": 1, "window_seconds": 60, "key": "{{ post_id | lower }}"}},
    ],
)
def test_both_keys_accept_the_same_template_language(producer, body):
    assert put(producer, body).status_code in (200, 201)


def test_a_throttle_key_renders_like_a_digest_key():
    data = {"post_id": "P-7", "thread": {"id": 3}}
    assert key_render("{{ post_id | lower }}:{{ thread.id }}", data=data, actor="ana") == "p-7:3"
    assert key_render("{{ actor }}", data=data, actor="ana") == "ana"


def test_a_hostile_key_renders_empty_within_the_template_budget():
    started = time.monotonic()
    assert key_render("{% for i in range(10**9) %}x{% endfor %}", data={}, actor="") == ""
    assert key_render("{{ 'x' * 10**9 }}", data={}, actor="") == ""
    assert time.monotonic() - started < 5


def test_a_key_is_cut_to_its_column_width():
    assert len(key_render("{{ 'k' * 1000 }}", data={}, actor="")) == KEY_MAX_CHARS
