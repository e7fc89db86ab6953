"""The OpenAPI schema tells the truth about the API, and its docs work anywhere.

- every URL under /api/v1/, with every method its view implements, is in the
  schema (routes are read from Django's resolver, so a new route without
  schema fails here);
- the schema validates, with no drf-spectacular warning (what CI runs);
- /api/docs/ (Swagger UI) and /api/redoc/ (ReDoc) load nothing but this
  server's own files, and a real browser renders every operation from them
  without one request leaving the server.
"""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from clarion_dev.browser import chromium_path
from notifications.api.auth import api_key_create
from notifications.models import Recipient
from notifications.services.events import event_accept
from notifications.services.fanout import event_fan_out_page
from notifications.services.tokens import recipient_token_issue
from tests.helpers import schemathesis_run

API_PREFIX = "/api/v1/"
# What APIView implements for every view; not operations of the API's own.
GENERIC_METHODS = {"options", "head"}
DOCS_PAGES = ("/api/docs/", "/api/redoc/")
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


def api_routes() -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every route under /api/v1/ and each HTTP
    method its view class defines, read from the URL resolver."""
    found: set[tuple[str, str]] = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = str(pattern.pattern)
            assert not route.startswith("^") or not (prefix + route).startswith(API_PREFIX), (
                f"a regex route under {API_PREFIX} ({route}): this test reads path() routes only"
            )
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern) and (prefix + route).startswith(API_PREFIX):
                path = _CONVERTER.sub(r"{\1}", prefix + route)
                callback = pattern.callback
                view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
                if view is None:  # a plain function: its methods cannot be read; GET at least
                    found.add((path, "get"))
                    continue
                for method in view.http_method_names:
                    if method not in GENERIC_METHODS and hasattr(view, method):
                        found.add((path, method))

    walk(get_resolver().url_patterns, "/")
    return found


def schema_operations() -> set[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(path, method) for path, item in schema["paths"].items() for method in item}


def test_every_api_v1_route_and_method_is_in_the_schema():
    routes = api_routes()
    assert len(routes) > 40  # the resolver walk found the API at all
    operations = schema_operations()
    assert routes - operations == set(), "routes missing from the OpenAPI schema"
    assert {op for op in operations if op[0].startswith(API_PREFIX)} - routes == set(), (
        "schema operations no route serves"
    )


def test_every_operation_documents_its_problems_and_security():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "errors"}
    assert set(schema["components"]["securitySchemes"]) >= {"Bearer", "Recipient"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            schemes = {name for option in operation["security"] for name in option}
            assert schemes == ({"Recipient", "Session"} if "/inbox" in path else {"Bearer"}), where
            answers = operation["responses"]
            assert any(code.startswith("2") for code in answers), where
            assert "401" in answers, where
            for code, answer in answers.items():
                if code.startswith(("4", "5")):
                    assert list(answer["content"]) == ["application/problem+json"], where
                else:
                    assert "application/problem+json" not in answer.get("content", {}), where


def test_schema_validates_with_no_warning(tmp_path: Path):
    GENERATOR_STATS.reset()  # warnings other tests' schema generation left behind
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/events:" in out.read_text()


class _AssetLinks(HTMLParser):
    """The URLs a page loads: script src, link href, img src, redoc spec-url."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = {"script": "src", "link": "href", "img": "src", "redoc": "spec-url"}
        value = dict(attrs).get(names.get(tag, ""))
        if value:
            self.urls.append(value)


@pytest.mark.parametrize("page", DOCS_PAGES)
def test_docs_page_loads_only_local_assets_that_answer(page):
    client = Client()
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"https?://", html), "an absolute URL in the docs page"
    parser = _AssetLinks()
    parser.feed(html)
    assert len(parser.urls) >= 2, parser.urls
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        assert client.get(url).status_code == 200, url


# --- In a real browser --------------------------------------------------------


@pytest.fixture
def browser():
    """Per test: a module-wide Playwright loop would still run in this thread
    when a transactional test below flushes the database."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path, "Chromium is needed for the browser tests: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


# No database mark on the browser tests: the pages read no rows, and a flush
# after a transactional test would meet Playwright's event loop in this thread.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "screenshots"


def offline_page(browser, server):
    """A page whose requests reach only `server`; the rest are refused and listed."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    outside: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(server.base_url):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    context.route("**/*", route)
    return context, context.new_page(), outside


def operation_count() -> int:
    return len(schema_operations())


def test_swagger_ui_renders_every_operation_and_authorize_offline(browser, asgi_server):
    context, page, outside = offline_page(browser, asgi_server)
    try:
        page.goto(f"{asgi_server.base_url}/api/docs/")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() == operation_count()
        page.screenshot(path=str(SCREENSHOTS / "swagger_ui_offline.png"), full_page=False)
        page.locator("button.authorize").first.click()
        dialog = page.locator(".auth-container")
        dialog.first.wait_for(timeout=5_000)
        names = dialog.all_inner_texts()
        assert any("Bearer" in text for text in names), names
        assert any("Recipient" in text for text in names), names
        assert outside == []
    finally:
        context.close()


def test_redoc_renders_every_operation_offline(browser, asgi_server):
    context, page, outside = offline_page(browser, asgi_server)
    try:
        page.goto(f"{asgi_server.base_url}/api/redoc/")
        page.wait_for_selector("[data-section-id^='operation/']", timeout=30_000)
        assert page.locator("[data-section-id^='operation/']").count() == operation_count()
        assert outside == []
        page.screenshot(path=str(SCREENSHOTS / "redoc_offline.png"), full_page=False)
    finally:
        context.close()


# --- What the server answers, against the schema -------------------------------


def conformance(server, header: str, *extra: str) -> subprocess.CompletedProcess:
    """Schemathesis against the running server, checking that each answer's
    status code, content type and body are the ones the schema documents."""
    return schemathesis_run(
        server.base_url,
        header,
        checks="status_code_conformance,content_type_conformance,response_schema_conformance",
        examples=10,
        seed=20261202,
        extra=extra,
    )


def notify(api_key_id: int, recipient: str, count: int) -> None:
    """Notifications (and their deliveries) for `recipient`, so that pages are not empty."""
    for n in range(count):
        body = {"type": "comment.created", "recipients": [recipient], "data": {"comment": n}}
        accepted = event_accept(api_key_id=api_key_id, body=body)
        event_fan_out_page(event_id=accepted.id, page=0)


@pytest.mark.django_db(transaction=True)
def test_producer_answers_conform_to_the_schema(asgi_server, comment_type):
    api_key, key = api_key_create(name="conformance")
    Recipient.objects.create(external_id="ana", email="ana@example.com", data={"plan": "pro"})
    notify(api_key.id, "ana", 3)
    result = conformance(
        asgi_server, f"Authorization: Bearer {key}", "--exclude-path-regex", "inbox"
    )
    assert result.returncode == 0, result.stdout[-6000:]


@pytest.mark.django_db(transaction=True)
def test_inbox_answers_conform_to_the_schema(asgi_server, comment_type):
    recipient = Recipient.objects.create(external_id="conformance-reader")
    notify(api_key_create(name="conformance")[0].id, "conformance-reader", 3)
    token = recipient_token_issue(recipient_id=recipient.id).token
    result = conformance(
        asgi_server, f"Authorization: Recipient {token}", "--include-path-regex", "inbox"
    )
    assert result.returncode == 0, result.stdout[-6000:]
