"""Checks made before an operation runs, from the sizes of its operands.

Each function raises TemplateError when the operation would exceed a limit, so
the work is refused before it is done: `9**64**64` is not computed, `'x'.ljust(10**9)`
is not allocated. Builtin methods reachable from a template are a closed list.
"""

from __future__ import annotations

import re
from _string import formatter_field_name_split, formatter_parser  # what str.format itself uses
from typing import Any, NoReturn

from templates_app.errors import TemplateError
from templates_app.limits import (
    MAX_INT_BITS,
    MAX_ITEMS,
    MAX_OUTPUT_CHARS,
    MAX_PIECES,
    MAX_VALUE_BYTES,
    mem_size,
    text_size,
)

# Fields of one str.format or directives of one % format: each costs a step of Python
# (the sandbox's formatter is Python), so a text of 100,000 `{}` would run for 0.3 s.
MAX_FORMAT_FIELDS = 1000


def refuse(message: str) -> NoReturn:
    raise TemplateError(message)


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_OUTPUT_CHARS:
        refuse(f"{what} {width} is larger than {MAX_OUTPUT_CHARS} characters.")


def _number_size(value: Any, precision: int | None) -> int:
    """The most characters a number takes once formatted with `precision` (floats up to
    1.8e308 print 309 digits; ints are bounded by their bits)."""
    if isinstance(value, int):
        return value.bit_length() // 2 + 4 + (precision or 0)  # room for grouping commas
    return 330 + (6 if precision is None else precision)


# -- operators ---------------------------------------------------------------------------


def check_binop(operator: str, left: Any, right: Any) -> None:
    """`**`, `*`, `+` and `%` on the template's values, before Python computes them."""
    if operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and left.bit_length() * right > MAX_INT_BITS
        ):
            refuse(f"A power in the template would be larger than {MAX_INT_BITS} bits.")
    elif operator == "*":
        _check_repeat(left, right)
    elif operator == "+":
        if (
            isinstance(left, str)
            and isinstance(right, str)
            and len(left) + len(right) > MAX_OUTPUT_CHARS
        ):
            refuse(f"A text in the template would be longer than {MAX_OUTPUT_CHARS} characters.")
    elif operator == "%" and isinstance(left, str):
        check_percent_format(left, right)


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            refuse(f"A product in the template would be larger than {MAX_INT_BITS} bits.")
        return
    seq, times = (left, right) if isinstance(right, int) else (right, left)
    if not isinstance(times, int) or times <= 0:
        return
    if isinstance(seq, str):
        if len(seq) * times > MAX_OUTPUT_CHARS:
            refuse(f"A repeated text in the template would pass {MAX_OUTPUT_CHARS} characters.")
    elif isinstance(seq, (list, tuple)):
        if len(seq) * times > MAX_ITEMS:
            refuse(f"A repeated list in the template would have more than {MAX_ITEMS} items.")
        if mem_size(seq, MAX_VALUE_BYTES // times + 1) * times > MAX_VALUE_BYTES:
            refuse(f"A repeated list in the template would hold over {MAX_VALUE_BYTES >> 20} MiB.")


# -- printf-style formatting: 'text %s' % value ------------------------------------------

_PERCENT = re.compile(
    r"%(?:\((?P<key>[^()]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?"
    r"(?P<kind>[diouxXeEfFgGcrsa%])"
)


def check_percent_format(template: str, args: Any) -> None:
    """The result of `template % args` fits, counting widths, precisions and the values."""
    if "%" not in template:
        return
    if "%" in _PERCENT.sub("", template):
        refuse("A % format in the template has a directive that is not supported.")
    positional = args if isinstance(args, tuple) else (args,)
    sizes: dict[int, int] = {}  # the same value may be formatted many times: measure it once
    total = len(template)
    index = 0
    for count, match in enumerate(_PERCENT.finditer(template)):
        if count >= MAX_FORMAT_FIELDS:
            refuse(f"A % format in the template has more than {MAX_FORMAT_FIELDS} directives.")
        kind = match["kind"]
        if kind == "%":
            continue
        width, precision = match["width"], match["precision"]
        if width == "*" or precision == "*":
            refuse("A % format with '*' widths is not supported in templates.")
        width = _digits(width, "A % format width")
        precision = _digits(precision, "A % format precision") if precision is not None else None
        if match["key"] is not None:
            value = args.get(match["key"]) if isinstance(args, dict) else None
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        if kind in "sra":
            key = id(value)
            if key not in sizes:
                sizes[key] = text_size(value if kind == "s" else [value], MAX_OUTPUT_CHARS)
            size = sizes[key] if precision is None else min(sizes[key], precision)
        elif kind == "c":
            size = 1
        else:
            size = _number_size(value, precision)
        total += max(width, size)
        if total > MAX_OUTPUT_CHARS:
            refuse(f"A % format in the template would pass {MAX_OUTPUT_CHARS} characters.")


def _digits(text: str | None, what: str) -> int:
    if not text:
        return 0
    if len(text) > 7 or int(text) > MAX_OUTPUT_CHARS:
        refuse(f"{what} above {MAX_OUTPUT_CHARS} is not allowed.")
    return int(text)


# -- str.format / str.format_map ----------------------------------------------------------

_SPEC = re.compile(  # [[fill]align][sign][z][#][0][width][grouping][.precision][type]
    r"(?s:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?"
    r"(?P<kind>[bcdeEfFgGnosxX%]?)"
)


def check_str_format(template: str, args: tuple, kwargs: dict) -> None:
    """The result of `template.format(*args, **kwargs)` fits: no nested fields, widths and
    precisions within the limit, and every field counted with the size of its value."""
    sizes: dict[int, int] = {}
    total = 0
    auto = 0
    for count, (literal, field, spec, conversion) in enumerate(formatter_parser(template)):
        if count >= MAX_FORMAT_FIELDS:
            refuse(f"A format in the template has more than {MAX_FORMAT_FIELDS} fields.")
        total += len(literal)
        if field is None:
            continue
        if "{" in spec:
            refuse("Nested fields in a format spec are not supported in templates.")
        match = _SPEC.fullmatch(spec)
        if match is None:
            refuse(f"The format spec {spec[:40]!r} is not supported in templates.")
        width = _digits(match["width"], "A format width")
        precision = match["precision"] and _digits(match["precision"], "A format precision")
        first, rest = formatter_field_name_split(field)
        if first == "":
            first, auto = auto, auto + 1
        if isinstance(first, int):
            value = args[first] if first < len(args) else None
        else:
            value = kwargs.get(first)
        if match["kind"] and match["kind"] not in "s":
            size = _number_size(value, precision)
        else:
            key = id(value)
            if key not in sizes:
                printed = [value] if conversion in ("r", "a") else value  # !r: its repr
                sizes[key] = text_size(printed, MAX_OUTPUT_CHARS)
            size = sizes[key]
            if any(True for _ in rest):  # {0.attr} / {0[key]}: a part of the value, or a short repr
                size = 2 * size + 200
        total += max(width, size)
        if total > MAX_OUTPUT_CHARS:
            refuse(f"A format in the template would make more than {MAX_OUTPUT_CHARS} characters.")


# -- builtin methods ----------------------------------------------------------------------

_STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "lower",
        "upper",
        "title",
        "swapcase",
        "strip",
        "lstrip",
        "rstrip",
        "removeprefix",
        "removesuffix",
        "startswith",
        "endswith",
        "count",
        "find",
        "rfind",
        "index",
        "rindex",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "partition",
        "rpartition",
        "unescape",
        "striptags",  # Markup's own
    }
)
_STR_PADDING = frozenset({"center", "ljust", "rjust", "zfill"})
_STR_SPLITS = frozenset({"split", "rsplit", "splitlines"})
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_OTHER_METHODS = {
    list: frozenset({"count", "index", "copy"}),
    tuple: frozenset({"count", "index"}),
    dict: frozenset({"get", "keys", "values", "items", "copy"}),
    int: frozenset({"bit_length"}),
    bool: frozenset(),
    float: frozenset({"is_integer"}),
}


def check_method(owner: Any, name: str, args: tuple, kwargs: dict) -> None:
    """A builtin method a template calls: allowed ones only, with their arguments checked.
    `str.join` is checked by check_join, `str.format` by check_str_format."""
    if isinstance(owner, str):
        _check_text_arguments(name, args, kwargs)
        if name in _STR_METHODS:
            return
        if name in _STR_PADDING:
            width = args[0] if args else kwargs.get("width", 0)
            _check_width(width, f"The width of {name}()")
            return
        if name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            if len(owner) + owner.count("\t") * max(size, 0) > MAX_OUTPUT_CHARS:
                refuse(f"expandtabs() would make more than {MAX_OUTPUT_CHARS} characters.")
            return
        if name == "replace":
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            check_replace(owner, args[0] if args else "", args[1] if len(args) > 1 else "", count)
            return
        if name in _STR_SPLITS:
            check_split(owner, name, args, kwargs)
            return
    elif name in _OTHER_METHODS.get(type(owner), ()):
        return
    kind = type(owner).__name__ if owner is not None else "this"
    refuse(f"The method {kind}.{name}() is not available in templates.")


def _check_text_arguments(name: str, args: tuple, kwargs: dict) -> None:
    # Only text and numbers: Markup's methods would escape (print) any other value.
    for value in (*args, *kwargs.values()):
        if value is None or isinstance(value, (str, int)):
            continue
        if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
            continue
        refuse(f"str.{name}() takes text and numbers in templates.")


def check_replace(text: str, old: Any, new: Any, count: Any, escape_factor: int = 1) -> None:
    if not isinstance(old, str) or not isinstance(new, str):
        refuse("replace() takes text in templates.")
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    if len(text) + occurrences * max(0, escape_factor * len(new) - len(old)) > MAX_OUTPUT_CHARS:
        refuse(f"replace() would make more than {MAX_OUTPUT_CHARS} characters.")


def check_split(text: str, name: str, args: tuple, kwargs: dict) -> None:
    """A split makes one object per piece: count the pieces before splitting."""
    if name == "splitlines":
        pieces = sum(text.count(c) for c in _LINE_BREAKS) + 1
    else:
        sep = args[0] if args else kwargs.get("sep")
        maxsplit = args[1] if len(args) > 1 else kwargs.get("maxsplit", -1)
        if isinstance(maxsplit, int) and 0 <= maxsplit < MAX_PIECES:
            return
        pieces = len(text) // 2 + 1 if sep is None else (text.count(sep) + 1 if sep else 1)
    if pieces > MAX_PIECES:
        refuse(f"{name}() would make more than {MAX_PIECES} pieces.")


def check_join(separator: str, items: list) -> None:
    """`separator.join(items)` fits (items already taken from their iterable)."""
    total = len(separator) * max(0, len(items) - 1)
    for item in items:
        if not isinstance(item, str):
            refuse("str.join() takes a list of texts in templates.")
        total += len(item)
    if total > MAX_OUTPUT_CHARS:
        refuse(f"join() would make more than {MAX_OUTPUT_CHARS} characters.")
