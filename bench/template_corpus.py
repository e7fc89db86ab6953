"""Scenario `template_corpus`: every hostile template of tests/template_corpus.py, rendered
in this process, with its outcome, CPU time and peak memory.

Runs with the other scenarios (`python -m bench template_corpus`), or alone without any
server (`python -m bench.template_corpus`): the table on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from bench.common import metric, say


def _measures() -> list:
    from tests.template_corpus import CASES, measure

    return [measure(case) for case in CASES]


def run(env, opts) -> dict:
    from tests.template_corpus import CPU_LIMIT_MS, PEAK_LIMIT_KIB, table

    say("rendering the hostile template corpus in this process")
    measures = _measures()
    print(table(measures), flush=True)
    return {
        "metrics": [
            metric("cases", len(measures), ""),
            metric("refused", sum(m.outcome == "refused" for m in measures), ""),
            metric(
                "outcome not as expected",
                sum(m.outcome != m.case.expect for m in measures),
                "",
                at_most=0,
            ),
            metric(
                "most CPU of one render", max(m.cpu_ms for m in measures), "ms", below=CPU_LIMIT_MS
            ),
            metric(
                "most memory of one render",
                max(m.peak_kib for m in measures),
                "KiB",
                below=PEAK_LIMIT_KIB,
            ),
        ],
        "details": {
            "cases": [
                {
                    "case": m.case.name,
                    "source": m.case.source[:200],
                    "expect": m.case.expect,
                    "outcome": m.outcome,
                    "cpu_ms": m.cpu_ms,
                    "peak_kib": m.peak_kib,
                    "detail": m.detail,
                }
                for m in measures
            ]
        },
    }


def main() -> int:
    from bench import report

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = run(None, None)
    path = report.write("template_corpus", stamp, {"scenario": "template_corpus", **result})
    print()
    print(report.table({"template_corpus": result}))
    say(f"results: {path}")
    return 0 if all(m.ok is not False for m in result["metrics"]) else 1


if __name__ == "__main__":
    sys.exit(main())
