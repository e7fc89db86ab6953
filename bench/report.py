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
    return (
        f"{text} {m.unit}".strip()
        if m.unit and m.unit != "x"
        else (f"{text}x" if m.unit == "x" else text)
    )


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
        lines.append(
            "  ".join(
                str(cell).ljust(widths[i]) if i != 2 else str(cell).rjust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def merge_runs(runs: list[dict]) -> dict:
    """One result from several runs of a scenario: each numeric metric is the
    median of the runs, its name followed by the spread, its goal judged on
    the median; other values are listed per run. The runs stay in details."""
    import statistics

    from bench.common import metric

    first = runs[0]
    merged = []
    for index, m in enumerate(first.get("metrics", [])):
        same = [
            r["metrics"][index]
            for r in runs
            if len(r.get("metrics", [])) > index and r["metrics"][index].name == m.name
        ]
        values = [x.value for x in same]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numeric) == len(values) and len(values) == len(runs):
            median = statistics.median(numeric)
            if all(isinstance(v, int) for v in numeric) and median == int(median):
                median = int(median)
            name = f"{m.name} [median of {len(runs)}: {fmt(min(numeric))}-{fmt(max(numeric))}]"
            goal = m.goal
            ok = m.ok
            if m.ok is not None and goal:
                ok = _goal_met(goal, median)
            merged.append(
                metric(name, median, m.unit, goal_text=goal)
                if goal is None
                else type(m)(name, median, m.unit, goal, ok)
            )
        else:
            merged.append(
                type(m)(
                    f"{m.name} [runs: {' | '.join(fmt(v) for v in values)}]",
                    values[0],
                    m.unit,
                    m.goal,
                    None if m.ok is None else all(x.ok for x in same),
                )
            )
    errors = [r["error"] for r in runs if r.get("error")]
    result = {"metrics": merged, "runs": [{k: v for k, v in r.items()} for r in runs]}
    if errors:
        result["error"] = errors[0]
    return result


def _goal_met(goal: str, value) -> bool | None:
    """A goal text as metric() writes it (">= 2,000", "<= 0", "< 50") applied to a value."""
    for op in (">=", "<=", "<", ">", "="):
        if goal.startswith(op):
            try:
                bound = float(goal[len(op) :].strip().replace(",", "").rstrip("x"))
            except ValueError:
                return None
            return {
                ">=": value >= bound,
                "<=": value <= bound,
                "<": value < bound,
                ">": value > bound,
                "=": value == bound,
            }[op]
    return None


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
