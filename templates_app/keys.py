"""Grouping keys of a notification type (`digest.key`, `throttle.key`): one
template language for both — the sandboxed templates of everything else —
checked when the type is defined, rendered against the event's data and actor.

A key groups events (the same key, the same digest window or throttle
counter), so a key that fails to render is the empty key: the event is
grouped with the others whose key is empty, never dropped.
"""

from __future__ import annotations

import logging

from templates_app.engine import TemplateError, check_syntax, render
from templates_app.rendering import build_context

log = logging.getLogger(__name__)

KEY_MAX_CHARS = 255


def key_problem(source: str) -> str | None:
    """Why a key template would not compile, or None."""
    return check_syntax(source)


def key_render(source: str, *, data: dict, actor: str) -> str:
    """The key of one event: `source` over the event's data (top-level names)
    and `actor`, at most KEY_MAX_CHARS characters; "" where it fails."""
    if not source:
        return ""
    try:
        return render(source, build_context(data=data, actor=actor, event={}))[:KEY_MAX_CHARS]
    except TemplateError as exc:
        log.warning("grouping key failed to render: %s", exc)
        return ""
