"""Sandboxed, bounded template rendering (Jinja2's ImmutableSandboxedEnvironment).

Templates are written by people who should not reach anything but the data
they are given: the sandbox refuses attributes such as `__class__`, mutation
of the context and unsafe callables, and the context holds plain data only
(dicts, lists, strings, numbers). On top of the sandbox every render is bounded:

- time: a deadline checked on every attribute/item lookup, call, filter and
  loop step (`range` is replaced by a counting generator);
- size: every filter and operator result and the output itself are capped.

A template that breaks a rule raises TemplateError; callers fail that one
delivery with the message, never the fan-out.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError, TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SOURCE_CHARS = 20_000
MAX_OUTPUT_CHARS = 256 * 1024
MAX_LOOP_STEPS = 100_000
DEFAULT_TIMEOUT_SECONDS = 0.25

# Filters a notification template needs; anything else is not available.
ALLOWED_FILTERS = {
    "abs", "capitalize", "count", "default", "d", "e", "escape", "first", "float", "int", "join", "last",
    "length", "list", "lower", "map", "max", "min", "replace", "reverse", "round", "safe", "select",
    "reject", "sort", "string", "striptags", "sum", "title", "trim", "truncate", "unique", "upper",
    "urlencode", "wordcount", "selectattr", "rejectattr", "batch", "slice", "dictsort", "items",
}


class TemplateError(Exception):
    """A template could not be rendered within the rules; the message says why."""


class _Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.steps = 0

    def check(self) -> None:
        self.steps += 1
        if self.steps & 63 == 0 and time.monotonic() > self.deadline:
            raise TemplateError("The template took too long to render.")


class _LenientUndefined(Undefined):
    """A missing variable renders as an empty string (producers omit optional data)."""

    def __str__(self) -> str:
        return ""


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
        raise TemplateError(f"A value in the template grew beyond {MAX_OUTPUT_CHARS} characters.")
    if isinstance(value, (list, tuple)) and len(value) > MAX_LOOP_STEPS:
        raise TemplateError("A list in the template grew too long.")
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, autoescape: bool):
        super().__init__(autoescape=autoescape, undefined=_LenientUndefined, auto_reload=False, cache_size=0)
        self.filters = {name: f for name, f in self.filters.items() if name in ALLOWED_FILTERS}
        self.filters["replace"] = _bounded_replace
        self.globals = {"range": self._range}
        self._local = threading.local()  # one budget per rendering thread

    @property
    def budget(self) -> _Budget | None:
        return getattr(self._local, "budget", None)

    @budget.setter
    def budget(self, value: _Budget | None) -> None:
        self._local.budget = value

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # The sandbox would hand back an Undefined that renders as ""; refuse loudly instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    # every lookup, call and step spends from the budget
    def _spend(self) -> None:
        budget = self.budget
        if budget is not None:
            budget.check()

    def _range(self, *args: int) -> Iterator[int]:
        if any(not isinstance(a, int) for a in args):
            raise TemplateError("range() takes whole numbers.")
        for count, value in enumerate(range(*args)):
            if count >= MAX_LOOP_STEPS:
                raise TemplateError("A loop in the template ran too long.")
            self._spend()
            yield value

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._spend()
        # Contexts are plain data: a key wins over a dict method of the same
        # name, so `digest.items` is the digest's items, not dict.items.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._spend()
        return super().getitem(obj, argument)

    def call(self, __context, __obj, *args, **kwargs):  # noqa: N807 - Jinja's signature
        self._spend()
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    def call_filter(self, name, value, args=None, kwargs=None, context=None, eval_ctx=None):
        self._spend()
        return _bounded(super().call_filter(name, value, args, kwargs, context, eval_ctx))

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        self._spend()
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise TemplateError("Exponent too large in the template.")
        if operator == "*" and (isinstance(left, (str, list)) or isinstance(right, (str, list))):
            size = len(left) if isinstance(left, (str, list)) else len(right)
            times = right if isinstance(left, (str, list)) else left
            if isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
                raise TemplateError("A repeated value in the template is too large.")
        return _bounded(self.binop_table[operator](left, right))


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    occurrences = text.count(str(old)) if old else len(text) + 1
    if len(text) + occurrences * max(0, len(str(new)) - len(str(old))) > MAX_OUTPUT_CHARS:
        raise TemplateError("replace() would make the text too large.")
    return text.replace(str(old), str(new), -1 if count is None else count)


_ENVIRONMENTS = {True: BoundedSandbox(autoescape=True), False: BoundedSandbox(autoescape=False)}


@lru_cache(maxsize=2048)
def _compile(source: str, autoescape: bool):
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f"The template is longer than {MAX_SOURCE_CHARS} characters.")
    try:
        return _ENVIRONMENTS[autoescape].from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"Template syntax error on line {exc.lineno}: {exc.message}") from exc


def referenced_names(source: str) -> set[str]:
    """Top-level variables a template reads (`recipient` for `{{ recipient.email }}`)."""
    if not source or "{" not in source:
        return set()
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(_ENVIRONMENTS[False].parse(source)))
    except TemplateSyntaxError:
        return set()


def check_syntax(source: str) -> str | None:
    """The syntax problem of a template, or None when it compiles."""
    try:
        _compile(source, False)
    except TemplateError as exc:
        return str(exc)
    return None


def render(source: str, context: dict[str, Any], *, autoescape: bool = False,
           timeout: float = DEFAULT_TIMEOUT_SECONDS) -> str:
    """Render one template string against plain data, bounded in time and size."""
    if not source:
        return ""
    if "{" not in source:
        return source  # literal text: nothing to evaluate (the author's own markup)
    template = _compile(source, autoescape)
    environment = _ENVIRONMENTS[autoescape]
    environment.budget = _Budget(timeout)
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"The rendered text is longer than {MAX_OUTPUT_CHARS} characters.")
            parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"The template tried something not allowed: {exc}") from exc
    except (JinjaTemplateError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
        raise TemplateError(f"The template failed: {type(exc).__name__}: {exc}") from exc
    finally:
        environment.budget = None


class _TextExtractor(HTMLParser):
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            href = dict(attrs).get("href")
            self.links.append(href or "")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        if tag == "a" and self.links:
            href = self.links.pop()
            if href:
                self.parts.append(f" ({href})")
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def text_from_html(markup: str) -> str:
    """A plain-text part for an email that only has HTML: text, line breaks, link targets."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
