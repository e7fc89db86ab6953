"""Rendering a template string: the public functions the rest of Clarion uses.

Templates are written by people who should not reach anything but the data
they are given, and whose mistakes or malice must not hold a worker: every
render runs in the bounded sandbox (sandbox.py) with its own budget of CPU
time and memory (limits.py), checked before each piece of work is done.

A template that breaks a rule raises TemplateError; callers fail that one
delivery with the message, never the fan-out.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError

from templates_app.errors import TemplateError
from templates_app.limits import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_OUTPUT_CHARS,
    MAX_SOURCE_CHARS,
    THREAD,
    Budget,
    current,
)
from templates_app.plaintext import text_from_html
from templates_app.sandbox import BoundedSandbox

__all__ = ["TemplateError", "check_syntax", "referenced_names", "render", "text_from_html"]

_ENVIRONMENTS = {True: BoundedSandbox(autoescape=True), False: BoundedSandbox(autoescape=False)}
_MESSAGE_CHARS = 500  # an error message is stored with the delivery: keep it short


@lru_cache(maxsize=2048)
def _compile(source: str, autoescape: bool):
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f"The template is longer than {MAX_SOURCE_CHARS} characters.")
    started = time.thread_time()  # only on a cache miss: compiling counts in the render's time
    try:
        return _ENVIRONMENTS[autoescape].from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"Template syntax error on line {exc.lineno}: {exc.message}") from exc
    except Exception as exc:  # nesting too deep for Python's parser or compiler
        raise TemplateError(f"The template could not be compiled: {type(exc).__name__}") from exc
    finally:
        current().compiled(time.thread_time() - started)


def referenced_names(source: str) -> frozenset[str]:
    """Top-level variables a template reads (`recipient` for `{{ recipient.email }}`)."""
    if not source or "{" not in source:
        return frozenset()
    return _referenced_names(source)


@lru_cache(maxsize=2048)
def _referenced_names(source: str) -> frozenset[str]:
    # Cached like _compile: the fan-out asks once per event, and parsing the
    # same template again for each of thousands of events a second was a third
    # of a fan-out worker's time (py-spy, `bench sustained`).
    try:
        return frozenset(meta.find_undeclared_variables(_ENVIRONMENTS[False].parse(source)))
    except (TemplateSyntaxError, RecursionError):  # rendering it will fail and say why
        return frozenset()


def check_syntax(source: str) -> str | None:
    """The syntax problem of a template, or None when it compiles."""
    try:
        _compile(source, False)
    except TemplateError as exc:
        return str(exc)
    return None


def render(
    source: str,
    context: dict[str, Any],
    *,
    autoescape: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> str:
    """Render one template string against plain data, within `timeout` seconds of this
    thread's CPU time and the limits of limits.py."""
    if not source:
        return ""
    if "{" not in source:
        return source  # literal text: nothing to evaluate (the author's own markup)
    previous = THREAD.budget
    THREAD.budget = Budget(timeout)  # this thread's render from here on
    try:
        template = _compile(source, autoescape)
        parts: list[str] = []
        size = 0
        # root_render_func rather than generate(): Jinja would rewrite the traceback of a
        # failure frame by frame, which for a deep recursion costs more than the render.
        for chunk in template.root_render_func(template.new_context(context)):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(
                    f"The rendered text is longer than {MAX_OUTPUT_CHARS} characters."
                )
            parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"The template tried something not allowed: {_short(exc)}") from exc
    except Exception as exc:  # whatever a template does wrong fails only itself
        raise TemplateError(f"The template failed: {type(exc).__name__}: {_short(exc)}") from exc
    finally:
        THREAD.budget = previous


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "…"
