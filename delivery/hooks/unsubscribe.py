"""One-click unsubscribe (RFC 8058): `/hooks/unsubscribe/<token>`.

GET shows a page with a button and changes nothing: link checkers and mail
scanners fetch every URL in a message. POST (the mail client's one-click,
body `List-Unsubscribe=One-Click`, or the page's button) turns the token's
channel off for its category in the recipient's preferences. Neither needs
a session or a CSRF token, the signed token is the authority. A token that
is not ours is 400, an expired one 410, never a 500.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from delivery.links import LinkExpired, LinkInvalid, UnsubscribeLink, unsubscribe_read
from notifications.models import NotificationType, Recipient
from preferences.services import preferences_get, preferences_put

log = logging.getLogger(__name__)
TEMPLATE = "delivery/unsubscribe.html"


def recipient_unsubscribe(*, recipient_id: int, category: str, channel: str) -> bool:
    """Turn `channel` off for `category`, keeping every other preference.

    A type of that category the recipient had turned on for the channel is
    turned off too: a type setting beats its category's, and "unsubscribe"
    that leaves mail coming is no unsubscribe. Returns False when the
    recipient is gone (erased): nothing is left to send to."""
    with transaction.atomic():
        # The row lock orders concurrent read-modify-writes of one recipient's document.
        if not Recipient.objects.select_for_update().filter(id=recipient_id).exists():
            return False
        document = preferences_get(recipient_id=recipient_id)
        changed = document["categories"].get(category, {}).get(channel) is not False
        document["categories"].setdefault(category, {})[channel] = False
        turned_on = [key for key, channels in document["types"].items() if channels.get(channel)]
        if turned_on:
            for key in NotificationType.objects.filter(
                key__in=turned_on, category=category
            ).values_list("key", flat=True):
                document["types"][key][channel] = False
                changed = True
        if changed:
            preferences_put(recipient_id=recipient_id, body=document)
    return True


def _page(
    request: HttpRequest, *, status: int, state: str, link: UnsubscribeLink | None = None
) -> HttpResponse:
    response = render(request, TEMPLATE, {"state": state, "link": link}, status=status)
    # The token is in the URL: keep it out of caches, referrers and search engines.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response


@csrf_exempt
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    try:
        link = unsubscribe_read(token)
    except LinkExpired as exc:
        return _page(request, status=exc.status, state="expired")
    except LinkInvalid as exc:
        return _page(request, status=exc.status, state="invalid")
    if request.method != "POST":
        return _page(request, status=200, state="confirm", link=link)
    recipient_unsubscribe(
        recipient_id=link.recipient_id, category=link.category, channel=link.channel
    )
    log.info(
        "unsubscribed recipient %s from %s %s (delivery %s)",
        link.recipient_id,
        link.category,
        link.channel,
        link.delivery_id,
    )
    return _page(request, status=200, state="done", link=link)
