"""Small shared pieces: progress output, percentiles, metrics with goals."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line, prefixed with the time since the bench started."""
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


def warn(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] WARNING: {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_values[int(k)]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p95/p99/max/mean in milliseconds of a list of durations in seconds."""
    values = sorted(s * 1000.0 for s in seconds)
    if not values:
        return {}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(values[-1], 3),
        "mean": round(sum(values) / len(values), 3),
    }


@dataclass
class Metric:
    name: str
    value: float | int | str | None
    unit: str = ""
    goal: str | None = None  # human text, e.g. ">= 2000"
    ok: bool | None = None  # None: informational

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric(
    name: str, value, unit: str = "", *, at_least=None, at_most=None, below=None, goal_text=None
) -> Metric:
    """A metric, optionally with a goal that decides ok/FAIL."""
    goal, ok = goal_text, None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        ok = False if (at_least is not None or at_most is not None or below is not None) else None
    if at_least is not None:
        goal = goal or f">= {_fmt(at_least)}"
        ok = ok if ok is False else value >= at_least
    elif at_most is not None:
        goal = goal or f"<= {_fmt(at_most)}"
        ok = ok if ok is False else value <= at_most
    elif below is not None:
        goal = goal or f"< {_fmt(below)}"
        ok = ok if ok is False else value < below
    return Metric(name, value, unit, goal, ok)


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.1f}"
        return f"{value:.3g}" if value < 1 else f"{value:.2f}"
    return str(value)


fmt = _fmt


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
        return False


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
