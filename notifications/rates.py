"""Per-API-key request rates: "N/s", "N/m" or "N/h".

A rate of N per period is a token bucket of capacity N refilled at N per
period: a producer may burst N requests at once, then goes on at the rate.
An empty rate on a key means the default, `CLARION_API_RATE_LIMIT`; an empty
default means unlimited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600}
RATE_RE = re.compile(r"^\s*(\d{1,9})\s*/\s*([smh])\s*$")
RATE_HELP = (
    'Requests per second, minute or hour: "20/s", "600/m", "10000/h"'
    " (a batch counts one per event). Empty: CLARION_API_RATE_LIMIT."
    " Changes apply within 30 seconds."
)


@dataclass(frozen=True)
class Rate:
    tokens: int
    period_seconds: int

    def __str__(self) -> str:
        unit = {seconds: unit for unit, seconds in PERIOD_SECONDS.items()}[self.period_seconds]
        return f"{self.tokens}/{unit}"


def rate_parse(text: str) -> Rate:
    """The rate of "N/s", "N/m" or "N/h" (N ≥ 1); raises ValueError with a message for people."""
    match = RATE_RE.match(text or "")
    if match is None:
        raise ValueError(f'{text!r} is not a rate; write it as N/s, N/m or N/h, e.g. "20/s".')
    tokens = int(match.group(1))
    if tokens < 1:
        raise ValueError(f"{text!r}: a rate allows at least 1 request per period.")
    return Rate(tokens=tokens, period_seconds=PERIOD_SECONDS[match.group(2)])


def validate_rate(text: str) -> None:
    """Model field validator: empty (the default) or a valid rate."""
    if text:
        try:
            rate_parse(text)
        except ValueError as error:
            raise ValidationError(str(error)) from error


@lru_cache(maxsize=8)
def _parse_default(text: str) -> Rate | None:
    return rate_parse(text) if text.strip() else None


def default_rate() -> Rate | None:
    """`CLARION_API_RATE_LIMIT`, parsed (None: unlimited). Checked at start-up (apps.py)."""
    return _parse_default(settings.CLARION["API_RATE_LIMIT"])
