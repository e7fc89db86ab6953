"""`GET /t/o/<token>` (the open pixel) and `GET /t/c/<token>` (a click's
redirect). The pixel answers the same image whatever the token, so a broken
or expired link never shows a broken image; a click leads only to a URL of
its delivery's stored HTML (delivery/tracking.py) and counts as reading the
in-app notification too."""

from __future__ import annotations

import base64
import logging

from django.db import connection
from django.http import HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_GET

from common.errors import ClarionError
from common.sqljson import from_db_json
from delivery.tracking import click_read, link_urls, open_read
from notifications.services.delivery_status import deliveries_advance
from notifications.services.inbox import notification_mark

log = logging.getLogger(__name__)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, max-age=0"


@require_GET
def open_pixel(request, token: str) -> HttpResponse:
    try:
        deliveries_advance(status="opened", delivery_ids=[open_read(token)])
    except ClarionError:
        pass  # an image is still what the mail client asked for
    response = HttpResponse(PIXEL, content_type="image/gif")
    response["Cache-Control"] = NO_STORE
    return response


@require_GET
def click(request, token: str) -> HttpResponse:
    try:
        delivery_id, index = click_read(token)
    except ClarionError as exc:
        return _page(exc.status, exc.title, str(exc))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.content, n.id, n.recipient_id FROM notifications_delivery d"
            " JOIN notifications_notification n ON n.id = d.notification_id WHERE d.id = %s",
            [delivery_id],
        )
        row = cursor.fetchone()
    urls = link_urls(((from_db_json(row[0]) or {}).get("html") or "") if row else "")
    if index >= len(urls):
        return _page(404, "Link not found", "This link does not lead anywhere any more.")
    deliveries_advance(status="clicked", delivery_ids=[delivery_id])
    try:
        notification_mark(recipient_id=row[2], notification_id=str(row[1]), action="read")
    except ClarionError:
        log.info("clicked delivery %s: its notification is gone", delivery_id)
    response = HttpResponseRedirect(urls[index])
    response["Cache-Control"] = NO_STORE
    response["Referrer-Policy"] = "no-referrer"
    return response


def _page(status: int, title: str, detail: str) -> HttpResponse:
    from django.utils.html import escape

    return HttpResponse(
        f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1>"
        f"<p>{escape(detail)}</p>",
        status=status,
        content_type="text/html; charset=utf-8",
    )
