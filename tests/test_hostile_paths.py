"""No path or query parameter makes a 500, with DEBUG on or off: every route
under /api/v1/ with a path id is called by every method with hostile ids
(NUL, very long, non-ASCII, huge numbers), and unknown paths under /api/
are problem+json too."""

from __future__ import annotations

import re

import httpx
import pytest
from django.db import connection
from django.urls import URLPattern, get_resolver

from notifications.models import Recipient
from notifications.services.tokens import recipient_token_issue
from tests.servers import AsgiServer
from tests.workers import database_url_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pipeline]

HOSTILE_IDS = [
    "a%00b",
    "%00",
    "x" * 10_000,
    "%C3%A9t%C3%A9-%E2%9C%93-%F0%9F%94%94",
    "9" * 40,
    "-1",
    "%FF%FE",
    "a%0Ab",
    "..%2F..%2Fetc",
    "%20",
]
METHODS = ["GET", "PUT", "POST", "DELETE"]
PROBLEM = "application/problem+json"


def _routes_with_ids() -> list[str]:
    """'/api/v1/recipients/{}/export'-style templates, from the URL conf itself."""
    api = next(p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/")
    routes = []
    for pattern in api.url_patterns:
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        if "<" in route:
            routes.append("/api/v1/" + re.sub(r"<[^>]+>", "{}", route))
    return routes


@pytest.fixture(scope="module", params=["debug-off", "debug-on"])
def server(request, django_db_setup, django_db_blocker):
    process = AsgiServer(
        database_url=database_url_for(connection.settings_dict),
        redis_url=__import__("django.conf").conf.settings.REDIS_URL,
        extra_env={"DEBUG": "true" if request.param == "debug-on" else "false"},
    )
    process.start()
    yield process
    process.stop()


def _credentials(api_key) -> dict[str, dict[str, str]]:
    reader = Recipient.objects.create(external_id="hostile-reader")
    token = recipient_token_issue(recipient_id=reader.id).token
    return {
        "producer": {"Authorization": f"Bearer {api_key[1]}"},
        "inbox": {"Authorization": f"Recipient {token}"},
    }


def test_every_route_answers_hostile_path_ids_without_a_500(server, api_key, comment_type):
    credentials = _credentials(api_key)
    failures = []
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for route in _routes_with_ids():
            headers = credentials["inbox" if route.startswith("/api/v1/inbox") else "producer"]
            for hostile in HOSTILE_IDS:
                path = route.format(*[hostile] * route.count("{}"))
                for method in METHODS:
                    response = http.request(method, path, headers=headers, json={})
                    content_type = response.headers.get("content-type", "")
                    if response.status_code >= 500 or (
                        response.status_code >= 400 and not content_type.startswith(PROBLEM)
                    ):
                        failures.append((method, path[:80], response.status_code, content_type))
    assert failures == [], "\n".join(map(str, failures))


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/"),
        ("GET", "/api/v1"),  # /api/v1/ is the index
        ("GET", "/api/v1/no-such-thing"),
        ("POST", "/api/v2/events"),
        ("DELETE", "/api/v1/recipients/a/b/c/d"),
        ("GET", "/api/v1/inbox/1/2/3"),
    ],
)
def test_an_unknown_path_under_api_is_a_problem_404(server, method, path):
    response = httpx.request(method, server.base_url + path, json={})

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 404


def test_a_nul_in_a_recipient_id_names_the_field(server, api_key):
    response = httpx.get(
        f"{server.base_url}/api/v1/recipients/a%00b",
        headers={"Authorization": f"Bearer {api_key[1]}"},
    )

    assert response.status_code == 422
    assert "external_id" in response.json()["errors"]


def test_a_host_outside_allowed_hosts_is_a_problem_400(server):
    response = httpx.get(f"{server.base_url}/api/v1/events/x", headers={"Host": "evil.example"})

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


def test_an_html_error_page_under_api_becomes_a_problem_of_the_same_status(rf):
    from django.http import HttpResponseServerError

    from notifications.api.middleware import ApiProblemsMiddleware

    middleware = ApiProblemsMiddleware(
        lambda request: HttpResponseServerError("<h1>Traceback…</h1>")
    )

    api = middleware(rf.get("/api/v1/inbox"))
    page = middleware(rf.get("/admin/"))

    assert (api.status_code, api["Content-Type"]) == (500, PROBLEM)
    assert b"Traceback" not in api.content
    assert page["Content-Type"].startswith("text/html")


QUERY_ROUTES = [
    ("inbox", "/api/v1/inbox"),
    ("inbox", "/api/v1/inbox/unread-count"),
    ("producer", "/api/v1/topics/t/subscribers"),
    ("producer", "/api/v1/notification-types"),
    ("producer", "/api/v1/recipients/r/preferences"),
]
QUERY_PARAMS = ["cursor", "status", "limit"]


def test_hostile_query_parameters_never_make_a_500(server, api_key, comment_type):
    credentials = _credentials(api_key)
    failures = []
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for who, route in QUERY_ROUTES:
            for name in QUERY_PARAMS:
                for hostile in HOSTILE_IDS:
                    response = http.get(f"{route}?{name}={hostile}", headers=credentials[who])
                    if response.status_code >= 500 or (
                        response.status_code >= 400
                        and not response.headers.get("content-type", "").startswith(PROBLEM)
                    ):
                        failures.append((route, name, hostile[:20], response.status_code))
    assert failures == [], failures
