"""The pages a developer lands on: the home page at / says what is where, and
/api/v1/ answers an index of the API whose every link leads somewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from django.test import Client
from django.urls import Resolver404, resolve

from notifications.api.index import RESOURCES
from notifications.api.middleware import api_not_found
from notifications.pages import home_sections

pytestmark = pytest.mark.django_db


class _Links(HTMLParser):
    """Every href/src of a page, and whether it has a stylesheet link."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.stylesheets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("href", "src"):
            if attributes.get(name):
                self.urls.append(attributes[name])
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href", ""))


def links_of(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def served_by_a_view(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return match.func is not api_not_found


# --- /api/v1/ ---------------------------------------------------------------------------


def test_the_api_index_answers_json_without_credentials():
    response = Client().get("/api/v1/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["name"] == "Clarion API"
    assert set(body["resources"]) == {key for key, *_ in RESOURCES}


def test_the_api_index_links_the_swagger_ui_redoc_and_the_schema_and_each_answers():
    docs = Client().get("/api/v1/").json()["docs"]

    assert {key: urlsplit(url).path for key, url in docs.items()} == {
        "swagger_ui": "/api/docs/",
        "redoc": "/api/redoc/",
        "openapi_schema": "/api/schema/",
    }
    for url in docs.values():
        assert Client().get(url).status_code == 200, url


def test_every_resource_link_of_the_api_index_is_a_route_of_the_api():
    resources = Client().get("/api/v1/").json()["resources"]

    for key, link in resources.items():
        parts = urlsplit(link["href"])
        assert (parts.scheme, parts.netloc) == ("http", "testserver"), key
        # A URI template's {names} filled with a plain value: the route must take it.
        path = re.sub(r"\{(\w+)\}", "x", parts.path)
        assert path.startswith("/api/v1/") and served_by_a_view(path), (key, link["href"])
        assert link["caller"] in ("producer", "recipient")


def test_the_api_index_names_collections_and_uri_templates():
    resources = Client().get("/api/v1/").json()["resources"]

    assert urlsplit(resources["events"]["href"]).path == "/api/v1/events"
    assert urlsplit(resources["inbox"]["href"]).path == "/api/v1/inbox"
    assert urlsplit(resources["recipient"]["href"]).path == "/api/v1/recipients/{external_id}"


def test_the_api_index_answers_a_producer_key(producer):
    assert producer.get("/api/v1/").status_code == 200


def test_the_api_index_refuses_a_wrong_key_with_a_problem_401():
    response = Client().get("/api/v1/", HTTP_AUTHORIZATION="Bearer clk_not-a-key")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")


def test_the_api_index_answers_only_reads():
    response = Client().post("/api/v1/", data="{}", content_type="application/json")

    assert response.status_code == 405


# --- / ----------------------------------------------------------------------------------


def test_the_home_page_renders_every_place_with_its_path():
    response = Client().get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for _, places in home_sections(debug=False):
        for place in places:
            assert f'href="{place.path}"' in html and place.title in html, place


def test_every_link_of_the_home_page_answers_200():
    client = Client()
    urls = links_of(client.get("/").content.decode()).urls

    assert {"/api/v1/", "/api/docs/", "/api/redoc/", "/admin/", "/metrics", "/readyz"} <= set(urls)
    for url in urls:
        assert client.get(url, follow=True).status_code == 200, url


def test_the_home_page_is_styled_by_its_own_inline_css_and_loads_nothing_from_elsewhere():
    html = Client().get("/").content.decode()

    assert "<style>" in html
    assert not re.search(r"""(?:href|src)=["']?(?:https?:)?//""", html)
    assert links_of(html).stylesheets == []


def test_the_home_page_links_the_bell_demo_with_debug_on_and_it_answers(demo_server):
    html = httpx.get(f"{demo_server.base_url}/").text

    assert 'href="/demo/"' in html
    assert httpx.get(f"{demo_server.base_url}/demo/").status_code == 200


def test_the_home_page_answers_only_reads():
    assert Client().post("/").status_code == 405
