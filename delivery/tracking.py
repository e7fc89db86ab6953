"""Opens and clicks of emails: a pixel and redirects through signed links.

The HTML an email sends has each `href` to an http(s) URL replaced by a
click link and a 1×1 pixel appended; the delivery's stored content keeps the
original. A click token carries the delivery id and the link's position
among the URLs of that stored HTML, never the URL itself: the redirect can
only lead to a URL the template rendered for that delivery, so no token,
however made, turns Clarion into an open redirect.
"""

from __future__ import annotations

import html as html_lib
import re

from django.conf import settings
from django.urls import reverse

from delivery.links import LinkInvalid, token_make, token_read

# href="…" or href='…' with an absolute http(s) URL.
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""", re.IGNORECASE)
MAX_LINKS = 200


def link_urls(html: str) -> list[str]:
    """The distinct http(s) URLs the HTML links to, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _HREF.finditer(html or ""):
        seen.setdefault(html_lib.unescape(match.group(3)), None)
        if len(seen) >= MAX_LINKS:
            break
    return list(seen)


def open_url(delivery_id: int) -> str:
    token = token_make("open", {"d": delivery_id})
    return settings.CLARION["PUBLIC_URL"] + reverse("delivery-open", args=[token])


def click_url(delivery_id: int, index: int) -> str:
    token = token_make("click", {"d": delivery_id, "i": index})
    return settings.CLARION["PUBLIC_URL"] + reverse("delivery-click", args=[token])


def tracked_html(delivery_id: int, html: str) -> str:
    """The HTML as sent: links through click tokens (when TRACK_CLICKS), the
    open pixel at the end (when TRACK_OPENS)."""
    if not html:
        return html
    if settings.CLARION["TRACK_CLICKS"]:
        positions = {url: i for i, url in enumerate(link_urls(html))}

        def through_click(match: re.Match) -> str:
            index = positions.get(html_lib.unescape(match.group(3)))
            if index is None:
                return match.group(0)
            return (
                f"{match.group(1)}{match.group(2)}{click_url(delivery_id, index)}{match.group(2)}"
            )

        html = _HREF.sub(through_click, html)
    if settings.CLARION["TRACK_OPENS"]:
        pixel = (
            f'<img src="{open_url(delivery_id)}" width="1" height="1" alt=""'
            ' style="display:block;border:0;width:1px;height:1px">'
        )
        closing = html.lower().rfind("</body>")
        html = html[:closing] + pixel + html[closing:] if closing >= 0 else html + pixel
    return html


def open_read(token: str) -> int:
    payload = token_read("open", token)
    delivery_id = payload.get("d")
    if type(delivery_id) is not int or not 0 < delivery_id < 2**63:
        raise LinkInvalid("This link is not valid.")
    return delivery_id


def click_read(token: str) -> tuple[int, int]:
    payload = token_read("click", token)
    delivery_id, index = payload.get("d"), payload.get("i")
    if type(delivery_id) is not int or not 0 < delivery_id < 2**63:
        raise LinkInvalid("This link is not valid.")
    if type(index) is not int or not 0 <= index < MAX_LINKS:
        raise LinkInvalid("This link is not valid.")
    return delivery_id, index
