"""What one render may spend, and cheap estimates of how big a value is.

A render gets a budget of CPU time (the rendering thread's own clock) and of
memory (the sizes of the values it makes). Operations are checked before they
run, from their operands' sizes, so no single step can run away between two
checks; the budget bounds the sum of the steps.
"""

from __future__ import annotations

import math
import threading
import time
from collections import abc
from collections.abc import Iterator
from sys import getsizeof
from typing import Any, NoReturn

from templates_app.errors import TemplateError

MAX_SOURCE_CHARS = 20_000
# Parsing and compiling a template costs ~10 us and up to ~4 KiB per token (a name, an
# operator, a literal, a run of text): 2,000 tokens compile in < 50 ms and < 9 MiB.
MAX_TOKENS = 2000
MAX_OUTPUT_CHARS = 256 * 1024  # a rendered field, and any string made while rendering
MAX_INPUT_CHARS = 1024 * 1024  # a string given to truncate & co (data may be longer than output)
MAX_SPLIT_CHARS = 64 * 1024  # a string cut into pieces by striptags or title (one object per piece)
MAX_PIECES = 32_768  # pieces a string is split into; items taken from an iterator into a list
MAX_ITEMS = 100_000  # items of a list made while rendering, numbers of one range()
MAX_LOOP_STEPS = 100_000  # iterations of one loop
MAX_INT_BITS = 4096
MAX_VALUE_BYTES = 2 * 1024 * 1024  # one value made while rendering, counting what it holds
MAX_RENDER_BYTES = 8 * 1024 * 1024  # everything one render makes
MAX_CALL_DEPTH = 50  # macros calling macros
MAX_CALL_ARGS = 1000  # values spread into a call: f(*values)
DEFAULT_TIMEOUT_SECONDS = 0.1  # CPU time of the rendering thread

# Steps between two reads of the thread's CPU clock (a read costs ~0.6 us); an
# operation that may take longer than a step spends more steps.
CHECK_EVERY = 64


class Budget:
    """The CPU time and memory one render may still spend."""

    __slots__ = ("allocated", "deadline", "depth", "next_check", "steps", "timeout")

    def __init__(self, cpu_seconds: float) -> None:
        self.timeout = cpu_seconds
        self.deadline: float | None = None
        self.steps = 0
        self.next_check = CHECK_EVERY
        self.allocated = 0
        self.depth = 0

    def spend(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps >= self.next_check:
            self.check_clock()

    def compiled(self, seconds: float) -> None:
        """The render compiled its template first, in `seconds`: that counts in its time, but
        leaves it a quarter of it at least (a legitimate template, slow to compile on a busy
        machine, must not fail for it; compiling is bounded by MAX_TOKENS)."""
        self.deadline = time.thread_time() + max(self.timeout - seconds, self.timeout / 4)

    def check_clock(self) -> None:
        self.next_check = self.steps + CHECK_EVERY
        now = time.thread_time()
        if self.deadline is None:
            # The clock is first read after CHECK_EVERY steps, so the many renders that need
            # fewer never pay for reading it; the steps before it cost well under a millisecond.
            self.deadline = now + self.timeout
        elif now > self.deadline:
            raise TemplateError("The template took too long to render.")

    def allocate(self, size: int) -> None:
        """Count `size` bytes made by the render (and the time making them took)."""
        self.allocated += size
        if self.allocated > MAX_RENDER_BYTES:
            raise_too_much_memory()
        self.spend(1 + (size >> 10))


def raise_too_much_memory() -> NoReturn:
    raise TemplateError(f"The template made more than {MAX_RENDER_BYTES >> 20} MiB of values.")


class _Unlimited(Budget):
    """Outside a render (Jinja folding constants while compiling): nothing to count."""

    def __init__(self) -> None:
        super().__init__(math.inf)
        self.deadline = math.inf

    def spend(self, steps: int = 1) -> None:
        pass

    def compiled(self, seconds: float) -> None:
        pass

    def check_clock(self) -> None:
        self.next_check = self.steps + CHECK_EVERY

    def allocate(self, size: int) -> None:
        pass

    @property  # type: ignore[override]
    def allocated(self) -> int:
        return 0

    @allocated.setter
    def allocated(self, value: int) -> None:
        pass


UNLIMITED = _Unlimited()


class _Current(threading.local):
    budget: Budget = UNLIMITED


# THREAD.budget: the budget of the render running on this thread (web threads render side
# by side). An attribute rather than a function: the checks read it on every step.
THREAD = _Current()


def current() -> Budget:
    """The budget of the render running on this thread."""
    return THREAD.budget


_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_SEQUENCES = (list, tuple, set, frozenset, *_VIEWS)


def _repr_size(text: str) -> int:
    # repr() escapes backslashes and quotes, and spells unprintable characters as \xNN..\UNNNNNNNN
    if text.isprintable():
        return 2 * len(text) + 2
    return (4 if text.isascii() else 10) * len(text) + 2


def text_size(value: Any, limit: int) -> int:
    """An upper bound of len(str(value)), exact for strings; stops counting past `limit`,
    so it costs at most ~limit/2 steps however large or shared the value is."""
    if isinstance(value, str):
        return len(value)
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += _repr_size(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, _SEQUENCES):
            total += 14 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2  # also bounds octal and hex digits
        elif isinstance(item, float) or item is None:
            total += 24
        elif hasattr(item, "__self__") and isinstance(item.__self__, (str, list, tuple, dict)):
            # a bound method's repr names its object: <bound method Markup.upper of Markup('…')>
            total += 100
            stack.append(item.__self__)
        else:
            total += 100  # reprs of macros, loops, generators and the like are short
        if total > limit:
            return total
    return total


def mem_size(value: Any, limit: int) -> int:
    """Bytes held by `value` and what it contains, counting a shared item each time it is
    referenced (the size the value takes once printed or compared); stops past `limit`."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += getsizeof(item)  # a list's own size includes its pointers: the stack stays small
        if total > limit:
            return total
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return total


def charge(size: int) -> None:
    """Count `size` bytes just made, paying steps only for large ones (the common small
    values cost one addition; their number is bounded by the steps around them)."""
    budget = THREAD.budget
    budget.allocated += size
    if budget.allocated > MAX_RENDER_BYTES:
        raise_too_much_memory()
    if size >= 1024:
        budget.spend(size >> 10)


def made(value: Any) -> Any:
    """Check and count a value an operation just made: text within MAX_OUTPUT_CHARS, whole
    numbers within MAX_INT_BITS, lists within MAX_ITEMS and MAX_VALUE_BYTES."""
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT_CHARS:
            raise TemplateError(
                f"A text in the template grew beyond {MAX_OUTPUT_CHARS} characters."
            )
        charge(getsizeof(value))  # bytes: up to 4 a character
    elif isinstance(value, (list, tuple, dict)):
        if len(value) > MAX_ITEMS:
            raise TemplateError(f"A list in the template grew beyond {MAX_ITEMS} items.")
        size = mem_size(value, MAX_VALUE_BYTES)
        if size > MAX_VALUE_BYTES:
            raise TemplateError(f"A value in the template grew beyond {MAX_VALUE_BYTES >> 20} MiB.")
        THREAD.budget.allocate(size)
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateError(f"A number in the template grew beyond {MAX_INT_BITS} bits.")
    return value


def operand(value: Any) -> Any:
    """Pay for a comparison or test before it runs: `==` and `in` walk texts and lists
    without any check of their own, and `in` runs through an iterator (`x in items|map(...)`)."""
    if isinstance(value, str):
        if len(value) >= 1024:
            THREAD.budget.spend(len(value) >> 10)
    elif isinstance(value, (list, tuple, dict)):
        if value:
            THREAD.budget.spend(CHECK_EVERY)  # may walk up to MAX_VALUE_BYTES: read the clock first
    elif isinstance(value, abc.Iterator):
        return guarded(value, MAX_PIECES, "A comparison in the template went through")
    return value


def guarded(iterable: Any, limit: int, what: str) -> Iterator[Any]:
    """The items of `iterable`, each paid for, at most `limit` of them."""
    budget = THREAD.budget
    for count, item in enumerate(iterable, 1):
        if count > limit:
            raise TemplateError(f"{what} more than {limit} items.")
        budget.steps += 1  # budget.spend() inline: one per item of every loop
        if budget.steps >= budget.next_check:
            budget.check_clock()
        yield item
