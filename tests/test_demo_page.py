"""The bell demo issues tokens for anyone: it is served only while DEBUG is on."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_demo_page_is_not_found_with_debug_off(asgi_server):
    assert httpx.get(f"{asgi_server.base_url}/demo/").status_code == 404


def test_no_demo_token_is_issued_with_debug_off(asgi_server):
    response = httpx.post(f"{asgi_server.base_url}/demo/token", data={"recipient": "alice"})
    assert response.status_code == 404
    assert "token" not in response.text


def test_the_home_page_links_no_demo_with_debug_off(asgi_server):
    assert "/demo/" not in httpx.get(f"{asgi_server.base_url}/").text


def test_the_demo_page_says_it_exists_only_because_debug_is_on(demo_server):
    response = httpx.get(f"{demo_server.base_url}/demo/")
    assert response.status_code == 200
    assert "This page exists because DEBUG is on" in response.text
