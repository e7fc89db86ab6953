"""Scenario `run_idle_output`: the lines an idle `make run` writes a minute.

`python -m clarion_dev.run` (honcho: uvicorn, both workers and Beat, with the
demo data) starts on a database of its own on the bench's PostgreSQL and on a
private Redis server; once it is up the bench lets the start-up finish
(WARM_UP seconds), then counts every line it writes over `--step-seconds`
(default 120; `--quick` 45) while nothing is sent. Each run measures it twice:

* as `make run` starts it: the periodic sweeps' routine lines at DEBUG
  (clarion_dev/quiet_logs.py);
* the baseline, in the same run: CLARION_DEV_QUIET_LOGS=0, the sweeps'
  lines at INFO as production logs them.

Beat keeps sending its sweeps in both (the delivery dispatch sweep every 2 s):
the bench also counts the sweep runs recorded meanwhile, to show the quiet
output is not an idle Beat.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import metric, say
from bench.env import BenchEnv

WARM_UP = 15.0
QUIET_GOAL = 3  # lines a minute
RECORDED_SWEEPS = (
    "SELECT count(*) FROM notifications_sweeprun"
    " WHERE started_at > now() - %s * interval '1 second'"
)


def _idle_lines(env: BenchEnv, seconds: float, *, quiet: bool) -> dict:
    from tests.test_make_run_stops import make_run_up

    name = f"{psycopg.conninfo.conninfo_to_dict(env.database_url)['dbname']}_make_run"
    devdata = Path(tempfile.mkdtemp(prefix="clarion-bench-run-"))
    label = "quiet" if quiet else "baseline"
    extra_env = {"CLARION_DEV_QUIET_LOGS": "1" if quiet else "0"}
    with make_run_up(env.database_url, name, devdata, extra_env) as running:
        time.sleep(WARM_UP)  # start-up's own lines (seeding, first sweeps) are not idle output
        before = len(running.log().splitlines())
        t0 = time.monotonic()
        time.sleep(seconds)  # the window measured
        elapsed = time.monotonic() - t0
        written = running.log().splitlines()[before:]
        with psycopg.connect(running.database_url, autocommit=True) as conn:
            sweeps = conn.execute(RECORDED_SWEEPS, (round(elapsed),)).fetchone()[0]
        (env.log_dir / f"make-run-{label}.log").write_text(running.log())
    per_minute = len(written) * 60 / elapsed
    say(
        f"{label}: {len(written)} lines in {elapsed:.0f} s"
        f" ({per_minute:.1f}/min), {sweeps} sweep runs recorded meanwhile"
    )
    return {"lines": len(written), "per_minute": per_minute, "sweeps": sweeps, "first": written[:5]}


def run(env: BenchEnv, opts) -> dict:
    seconds = opts.step_seconds or (45.0 if opts.quick else 120.0)
    quiet = _idle_lines(env, seconds, quiet=True)
    baseline = _idle_lines(env, seconds, quiet=False)
    return {
        "metrics": [
            metric(
                "idle make run, lines a minute",
                round(quiet["per_minute"], 1),
                "lines/min",
                at_most=QUIET_GOAL,
            ),
            metric(
                "baseline: the sweeps' routine lines at INFO, lines a minute",
                round(baseline["per_minute"], 1),
                "lines/min",
            ),
            metric(
                "sweep runs recorded a minute meanwhile (an idle sweep: once a minute)",
                round(quiet["sweeps"] * 60 / seconds, 1),
                "runs/min",
                at_least=1,
            ),
        ],
        "details": {"seconds": seconds, "quiet": quiet, "baseline": baseline},
    }
