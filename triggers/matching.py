"""A saved search's `match`, checked and compiled (pure logic, no database).

`match` maps attribute names to conditions:
- a scalar (string, number, boolean): the attribute equals it, or holds it
  when the attribute is an array;
- a list of scalars: the attribute is one of them (or holds one of them);
- a range object with any of `gte`, `gt`, `lte`, `lt`: a numeric attribute
  within it.
`id` names the item's own id (a favourite is `{"id": "L-991"}`).

The database evaluates a match with `clarion_trigger_matches(match, attrs)`
(triggers/migrations/0002); this module decides the *anchor*: the values of
one equality condition under which a sweep finds the trigger's candidate
items through an index, so the sweep never compares every item with every
trigger.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_CONDITIONS = 32
MAX_LIST_VALUES = 100
MAX_STRING_CHARS = 256
MAX_ABS_NUMBER = 10**15
ATTRIBUTE_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
RANGE_OPERATORS = ("gte", "gt", "lte", "lt")


@dataclass(frozen=True)
class Anchor:
    """The attributes (sorted) a sweep looks the trigger up by, and the keys:
    one tuple of their values per combination. No attributes: compared with
    every item of its kind."""

    attributes: tuple[str, ...]
    keys: tuple[tuple, ...]


# An anchor of any-of lists is their product: a condition that would take
# it past this many rows is left to the check after the lookup.
MAX_ANCHOR_ROWS = 100
MAX_ANCHOR_ATTRIBUTES = 3


def _scalar_problem(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            return f"strings are at most {MAX_STRING_CHARS} characters"
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_ABS_NUMBER else f"numbers are within ±{MAX_ABS_NUMBER:.0e}"
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
            return f"numbers are finite and within ±{MAX_ABS_NUMBER:.0e}"
        return None
    return "must be a string, a number or a boolean"


def _number_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    return _scalar_problem(value)


def match_problems(match: object) -> dict[str, list[str]]:
    """Every problem of a `match`, keyed by its field path (empty: valid)."""
    if not isinstance(match, dict):
        return {"match": ["Must be an object of attribute conditions."]}
    errors: dict[str, list[str]] = {}
    if len(match) > MAX_CONDITIONS:
        errors["match"] = [f"At most {MAX_CONDITIONS} conditions."]
        return errors
    for name, condition in match.items():
        field = f"match.{name}"
        if not ATTRIBUTE_RE.match(name):
            errors[f"match[{name[:64]!r}]"] = [
                "Attribute names are 1 to 64 characters without control characters."
            ]
            continue
        if isinstance(condition, list):
            if not 1 <= len(condition) <= MAX_LIST_VALUES:
                errors[field] = [f"An any-of list holds 1 to {MAX_LIST_VALUES} values."]
                continue
            problems = {p for v in condition if (p := _scalar_problem(v))}
            if problems:
                errors[field] = [f"List values: {p}." for p in sorted(problems)]
        elif isinstance(condition, dict):
            unknown = sorted(set(condition) - set(RANGE_OPERATORS))
            if unknown or not condition:
                errors[field] = [f"A range holds any of {', '.join(RANGE_OPERATORS)}."]
                continue
            for operator, bound in condition.items():
                if problem := _number_problem(bound):
                    errors[f"{field}.{operator}"] = [f"{problem.capitalize()}."]
        elif condition is None:
            errors[field] = ["Must not be null."]
        elif problem := _scalar_problem(condition):
            errors[field] = [f"{problem.capitalize()}."]
        if name == "id" and not errors.get(field):
            values = condition if isinstance(condition, list) else [condition]
            if not all(isinstance(v, str) for v in values):
                errors[field] = ["Item ids are strings."]
    return errors


def _selectivity_rank(name: str, condition: object) -> tuple | None:
    """Lower is more selective; None: not an equality (ranges cannot anchor)."""
    if name == "id":
        return (0, 0)
    if isinstance(condition, dict):
        return None
    if isinstance(condition, str):
        return (1, 0)
    if isinstance(condition, list):
        return (2, len(condition))
    if isinstance(condition, bool):
        return (4, 0)  # two values: hardly narrows anything
    return (3, 0)


def anchor_of(match: dict) -> Anchor:
    """The equality conditions a sweep looks the trigger up by: the item id
    alone when named; else up to MAX_ANCHOR_ATTRIBUTES of its strings and
    any-of lists (shortest lists first) while their product of values stays
    within MAX_ANCHOR_ROWS; numbers and booleans only when there is nothing
    else. An item then meets only the triggers of its exact combination (an
    origin, a destination and a kind of equipment) instead of every trigger
    sharing one of them, and the rest is checked on few candidates."""
    ranked = sorted(
        (rank, name)
        for name, condition in match.items()
        if (rank := _selectivity_rank(name, condition)) is not None
    )
    if not ranked:
        return Anchor((), ((),))
    if ranked[0][1] == "id":
        chosen = ["id"]
    else:
        strong = [name for rank, name in ranked if rank[0] <= 2] or [ranked[0][1]]
        chosen, rows = [], 1
        for name in strong[:MAX_ANCHOR_ATTRIBUTES]:
            width = len(_values(match[name]))
            if chosen and rows * width > MAX_ANCHOR_ROWS:
                continue
            chosen.append(name)
            rows *= width
    attributes = tuple(sorted(chosen))
    keys: list[tuple] = [()]
    for name in attributes:
        keys = [key + (value,) for key in keys for value in _values(match[name])]
    return Anchor(attributes, tuple(keys))


def _values(condition: object) -> list:
    return list(dict.fromkeys(condition)) if isinstance(condition, list) else [condition]


def matches(match: dict, attributes: dict, item_id: str) -> bool:
    """What clarion_trigger_matches answers, in Python (tests, the admin's preview)."""
    attrs = {**attributes, "id": item_id}
    for name, condition in match.items():
        value = attrs.get(name)
        if isinstance(condition, list):
            values = value if isinstance(value, list) else [value]
            if not any(_json_eq(v, c) for v in values for c in condition):
                return False
        elif isinstance(condition, dict):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            for operator, bound in condition.items():
                if not _compare(operator, value, bound):
                    return False
        elif isinstance(value, list):
            if not any(_json_eq(v, condition) for v in value):
                return False
        elif not _json_eq(value, condition):
            return False
    return True


def _json_eq(a: object, b: object) -> bool:
    # JSON (and jsonb) tell booleans from numbers: true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b and a is not None


def _compare(operator: str, value: float, bound: float) -> bool:
    return {
        "gte": value >= bound,
        "gt": value > bound,
        "lte": value <= bound,
        "lt": value < bound,
    }[operator]
