"""The results table and the JSON files."""
from __future__ import annotations

import json
from pathlib import Path

from bench.common import Metric, fmt
from bench.env import RESULTS_DIR


def _value(m: Metric) -> str:
    if m.value is None:
        return "-"
    text = fmt(m.value)
    return f"{text} {m.unit}".strip() if m.unit and m.unit != "x" else (f"{text}x" if m.unit == "x" else text)


def table(results: dict[str, dict]) -> str:
    rows = [("scenario", "metric", "value", "goal", "")]
    for scenario, result in results.items():
        if result.get("error"):
            rows.append((scenario, "ERROR", result["error"].splitlines()[0][:70], "", "FAIL"))
        for m in result.get("metrics", []):
            status = "" if m.ok is None else ("ok" if m.ok else "FAIL")
            rows.append((scenario, m.name, _value(m), m.goal or "", status))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(str(cell).ljust(widths[i]) if i != 2 else str(cell).rjust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, Metric):
        return value.as_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write(scenario: str, stamp: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{scenario}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path


def write_latest(payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "latest.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path
