"""The home page and the bell demo: views and their URLs (the demo only while DEBUG is on)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST, require_safe

from common.errors import ClarionError
from notifications.models import Recipient
from notifications.services.events import event_accept
from notifications.services.tokens import recipient_token_issue

DEMO_EVENT = {
    "type": "comment.created",
    "actor": "demo",
    "data": {"post_title": "the demo post", "comment": "This arrived live.", "post_id": 1},
}


@dataclass(frozen=True)
class Place:
    """One link of the home page."""

    title: str
    path: str
    about: str


def home_sections(*, debug: bool) -> list[tuple[str, list[Place]]]:
    """What the home page lists, by section (the demo only while DEBUG is on)."""
    sections = [
        (
            "API",
            [
                Place("API index", "/api/v1/", "JSON: links to every main resource and the docs."),
                Place("API docs", "/api/docs/", "Swagger UI: read and try every operation."),
                Place("ReDoc", "/api/redoc/", "The same reference, as one readable page."),
                Place("OpenAPI schema", "/api/schema/", "The schema itself, for code generators."),
            ],
        ),
        (
            "Operations",
            [
                Place("Admin", "/admin/", "Types, templates, recipients, deliveries, API keys."),
                Place("Metrics", "/metrics", "Prometheus metrics of this process."),
                Place("Health", "/healthz", "Answers while the process runs."),
                Place("Readiness", "/readyz", "Whether PostgreSQL and Redis answer."),
            ],
        ),
    ]
    if debug:
        demo = Place(
            "Bell demo",
            "/demo/",
            "Pick a recipient, send a test event, watch the bell. Exists because DEBUG is on.",
        )
        sections.insert(0, ("Try it", [demo]))
    return sections


@require_safe
def home(request):
    return render(
        request, "notifications/home.html", {"sections": home_sections(debug=settings.DEBUG)}
    )


def _demo_only() -> None:
    # Also checked here, not only in the URLconf: these views mint tokens for anyone.
    if not settings.DEBUG:
        raise Http404("The demo exists only while DEBUG is on.")


@ensure_csrf_cookie
def demo(request):
    _demo_only()
    recipients = list(Recipient.objects.order_by("id").values_list("external_id", flat=True)[:50])
    return render(request, "realtime/demo.html", {"recipients": recipients})


@require_POST
def demo_token(request):
    """A recipient token for the demo page (a real app issues it server-side)."""
    _demo_only()
    external_id = request.POST.get("recipient") or ""
    recipient = Recipient.objects.filter(external_id=external_id).first()
    if recipient is None:
        return JsonResponse({"detail": "unknown recipient"}, status=404)
    token = recipient_token_issue(recipient_id=recipient.id)
    return JsonResponse({"token": token.token, "expires_at": token.expires_at})


@require_POST
def demo_send(request):
    """Send a test event to one recipient, as a producer would."""
    _demo_only()
    external_id = request.POST.get("recipient") or ""
    body = {**DEMO_EVENT, "recipients": [external_id]}
    if request.POST.get("comment"):
        body["data"] = {**DEMO_EVENT["data"], "comment": request.POST["comment"]}
    try:
        accepted = event_accept(api_key_id=None, body=body)
    except ClarionError as error:
        return JsonResponse({"detail": error.detail, "errors": error.errors}, status=error.status)
    return JsonResponse(json.loads(json.dumps(accepted.as_response())), status=202)


SERVICE_WORKER = "clarion/clarion-sw.js"


@require_safe
def service_worker(request):
    """The bell's service worker (web push), served from the site's root: a
    worker's scope is at most its script's directory, and one under
    /static/clarion/ could not cover the pages that register it.
    `Service-Worker-Allowed: /` lets a page widen the scope to the whole site
    whichever path it registers."""
    found = finders.find(SERVICE_WORKER)
    if not found:
        raise Http404("The service worker's file is missing.")
    with open(found, "rb") as source:
        script = source.read()
    return HttpResponse(
        script,
        content_type="text/javascript; charset=utf-8",
        # Browsers check for a new worker at most daily anyway; never serve a stale one.
        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
    )


urlpatterns = [
    path("", home, name="home"),
    path("clarion-sw.js", service_worker, name="clarion-service-worker"),
]

# The bell demo issues a recipient token to anyone who asks: it exists only
# while DEBUG is on, never in a deployment.
if settings.DEBUG:
    urlpatterns += [
        path("demo/", demo, name="demo"),
        path("demo/token", demo_token, name="demo-token"),
        path("demo/send", demo_send, name="demo-send"),
    ]
