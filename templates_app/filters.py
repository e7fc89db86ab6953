"""The filters and tests a template may use, each checked before it runs.

Every filter but the constant-time ones is wrapped: its input is measured
before Jinja's filter turns it into text or a list, iterators are paid for item
by item, arguments that size the result (widths, counts, precisions) are
checked, and the result is counted against the render's budget. The wrappers
take the context, which also keeps Jinja from running them while compiling
(constant folding happens outside any budget).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from sys import getsizeof
from typing import Any

from jinja2 import pass_context, pass_environment
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context, Undefined
from jinja2.tests import TESTS
from jinja2.utils import _PassArg

from templates_app.checks import check_replace, refuse
from templates_app.limits import (
    MAX_INPUT_CHARS,
    MAX_ITEMS,
    MAX_OUTPUT_CHARS,
    MAX_PIECES,
    MAX_SPLIT_CHARS,
    THREAD,
    charge,
    guarded,
    made,
    operand,
    text_size,
)

# The filters a notification template needs; anything else is not available.
ALLOWED_FILTERS = frozenset(
    {
        "abs",
        "capitalize",
        "count",
        "default",
        "d",
        "e",
        "escape",
        "first",
        "float",
        "int",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "map",
        "max",
        "min",
        "replace",
        "reverse",
        "round",
        "safe",
        "select",
        "reject",
        "sort",
        "string",
        "striptags",
        "sum",
        "title",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
        "wordcount",
        "selectattr",
        "rejectattr",
        "batch",
        "slice",
        "dictsort",
        "items",
    }
)

# How much text a filter that works on text may be given. Most of them make about as much
# as they get; a few shrink it (data may be longer than any output); wordcount steps through
# every word; striptags and title make one object per piece of their input; urlencode spells
# a character in up to 12.
_TEXT_INPUT = {
    "capitalize": MAX_OUTPUT_CHARS,
    "lower": MAX_OUTPUT_CHARS,
    "upper": MAX_OUTPUT_CHARS,
    "e": MAX_OUTPUT_CHARS,
    "escape": MAX_OUTPUT_CHARS,
    "safe": MAX_OUTPUT_CHARS,
    "string": MAX_OUTPUT_CHARS,
    "truncate": MAX_INPUT_CHARS,
    "trim": MAX_INPUT_CHARS,
    "wordcount": MAX_OUTPUT_CHARS,
    "replace": MAX_INPUT_CHARS,
    "striptags": MAX_SPLIT_CHARS,
    "title": MAX_SPLIT_CHARS,
    "urlencode": MAX_OUTPUT_CHARS // 12,
}
# Filters that go through their input: iterators are paid for item by item, and a text is
# taken character by character, MAX_PIECES of them at most.
_ITERATING = frozenset(
    {
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "max",
        "min",
        "batch",
        "items",
        "sum",
        "urlencode",
        "list",
        "sort",
        "unique",
        "reverse",
        "slice",
        "join",
        "dictsort",
    }
)
_SIZED = (list, tuple, dict, set, frozenset, type({}.keys()), type({}.values()), type({}.items()))
_PASS = {  # what a test takes first
    _PassArg.context: lambda context: context,
    _PassArg.eval_context: lambda context: context.eval_ctx,
    _PassArg.environment: lambda context: context.environment,
}
_WORD = re.compile(r"\w+")  # Jinja's wordcount pattern


def _text_input(name: str, value: Any, limit: int) -> None:
    if isinstance(value, str):
        size = len(value)
    else:
        size = text_size(value, MAX_OUTPUT_CHARS)  # it is about to be printed: str(value)
        limit = min(limit, MAX_OUTPUT_CHARS)
    if size > limit:
        refuse(f"The value given to {name} is too large ({size} characters, at most {limit}).")
    if size >= 1024:
        THREAD.budget.spend(size >> 10)


def _items(name: str, value: Any) -> Any:
    """`value` as the filter may iterate it: containers as they are (paid for by their
    length), other iterables paid for item by item."""
    if isinstance(value, str):
        if len(value) > MAX_PIECES:  # each character is an object of its own
            refuse(f"{name} would go through more than {MAX_PIECES} characters of a text.")
    elif isinstance(value, _SIZED):
        pass
    elif isinstance(value, Undefined):
        return value
    else:
        return guarded(value, MAX_PIECES, f"The value given to {name} has")
    if len(value) >= 16:
        THREAD.budget.spend(len(value) >> 4)  # sort, unique and the like compare every item
    return value


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's sum, for numbers only (sums of lists or texts grow quadratically)."""
    getter = make_attrgetter(environment, attribute) if attribute is not None else None
    total = start
    for item in iterable:
        value = getter(item) if getter is not None else item
        if not isinstance(value, (int, float)) or not isinstance(total, (int, float)):
            refuse("sum adds numbers only in templates.")
        total += value
    return total


def _wordcount(value: Any) -> int:
    # Jinja's counts a list of every word; count them one by one instead.
    return sum(1 for _ in _WORD.finditer(value if isinstance(value, str) else str(value)))


_OWN = {"sum": pass_environment(_sum), "wordcount": _wordcount}


def _check_replace(context: Context, value: Any, args: tuple, kwargs: dict) -> tuple:
    named = [kwargs.pop(key, None) for key in ("old", "new", "count")[len(args) :]]
    old, new, count = (*args, *named)[:3]
    old, new = (str(x) if isinstance(x, (int, float)) else x for x in (old, new))
    text = value if isinstance(value, str) else str(value)
    check_replace(text, old, new, count, escape_factor=6 if context.eval_ctx.autoescape else 1)
    return value, (old, new) if count is None else (old, new, count)


def _check_round(context: Context, value: Any, args: tuple, kwargs: dict) -> tuple:
    precision = args[0] if args else kwargs.get("precision", 0)
    if isinstance(precision, int) and abs(precision) > 100:
        refuse("round() takes a precision between -100 and 100 in templates.")
    return value, args


def _check_batch(context: Context, value: Any, args: tuple, kwargs: dict) -> tuple:
    count = args[0] if args else kwargs.get("linecount")
    fill = args[1] if len(args) > 1 else kwargs.get("fill_with")
    if isinstance(count, int) and count > MAX_ITEMS and fill is not None:
        refuse(f"batch() fills up to {MAX_ITEMS} items in templates.")  # [fill] * count
    return value, args


def _check_slice(context: Context, value: Any, args: tuple, kwargs: dict) -> tuple:
    count = args[0] if args else kwargs.get("slices")
    if isinstance(count, int) and count > MAX_ITEMS:
        refuse(f"slice() makes at most {MAX_ITEMS} slices in templates.")  # a loop of `count` steps
    return value, args


def _join_arguments(context: Context, value: Any, args: tuple, kwargs: dict) -> tuple:
    separator = args[0] if args else kwargs.pop("d", "")
    attribute = args[1] if len(args) > 1 else kwargs.pop("attribute", None)
    items = list(value)
    if attribute is not None:
        getter = make_attrgetter(context.environment, attribute)
        items = [getter(item) for item in items]
    total = text_size(separator, MAX_OUTPUT_CHARS) * max(0, len(items) - 1)
    for item in items:
        total += text_size(item, MAX_OUTPUT_CHARS)
        if total > MAX_OUTPUT_CHARS:
            refuse(f"join would make more than {MAX_OUTPUT_CHARS} characters.")
    THREAD.budget.spend(1 + (total >> 10))
    return items, (separator,)


_ARGUMENT_CHECKS = {
    "replace": _check_replace,
    "round": _check_round,
    "batch": _check_batch,
    "slice": _check_slice,
    "join": _join_arguments,
}


def _bounded_filter(name: str, func: Callable) -> Callable:
    first = _PassArg.from_obj(func)
    text_limit = _TEXT_INPUT.get(name)
    iterating = name in _ITERATING
    check = _ARGUMENT_CHECKS.get(name)

    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        # A short text has nothing to check.
        if text_limit is not None and (type(value) is not str or len(value) >= 1024):
            _text_input(name, value, text_limit)
        if iterating:
            value = _items(name, value)
        if check is not None:
            value, args = check(context, value, args, kwargs)
        if first is None:
            result = func(value, *args, **kwargs)
        elif first is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif first is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(context, value, *args, **kwargs)
        if result is value:
            return result
        if type(result) is str:  # most results: made()'s checks for a str, inline
            if len(result) > MAX_OUTPUT_CHARS:
                refuse(f"{name} made a text longer than {MAX_OUTPUT_CHARS} characters.")
            charge(getsizeof(result))
            return result
        return made(result)

    bounded.__name__ = bounded.__qualname__ = f"bounded_{name}"
    return bounded


def _bounded_test(func: Callable) -> Callable:
    pass_first = _PASS.get(_PassArg.from_obj(func))

    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        value = operand(value)
        args = tuple(operand(argument) for argument in args)
        if pass_first is None:
            return func(value, *args, **kwargs)
        return func(pass_first(context), value, *args, **kwargs)

    return bounded


# Filters that take constant time and make nothing (they hand back one of their arguments,
# an item or a length): Jinja's own, unwrapped.
_PLAIN = frozenset({"default", "d", "first", "last", "length", "count"})


def bounded_filters() -> dict[str, Callable]:
    """The allowed filters, each wrapped in its checks."""
    return {
        name: FILTERS[name]
        if name in _PLAIN
        else _bounded_filter(name, _OWN.get(name, FILTERS[name]))
        for name in sorted(ALLOWED_FILTERS)
    }


def bounded_tests() -> dict[str, Callable]:
    """Jinja's tests (`is divisibleby`, `is in`, ...), each paying for its operands."""
    return {name: _bounded_test(func) for name, func in TESTS.items()}
