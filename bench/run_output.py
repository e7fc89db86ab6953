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
    from tests.redis_server import RedisServer
    from tests.test_make_run_stops import MakeRun, alive, with_database

    name = f"{psycopg.conninfo.conninfo_to_dict(env.database_url)['dbname']}_make_run"
    admin_url = with_database(env.database_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    redis = RedisServer()
    redis.start()
    devdata = Path(tempfile.mkdtemp(prefix="clarion-bench-run-"))
    database_url = with_database(env.database_url, name)
    running = MakeRun(
        database_url,
        redis.url,
        devdata,
        extra_env={"CLARION_DEV_QUIET_LOGS": "1" if quiet else "0"},
    )
    tree = []
    try:
        running.wait_until_up(timeout=180)
        tree = running.tree()
        time.sleep(WARM_UP)
        before = len(running.log().splitlines())
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        written = running.log().splitlines()[before:]
        with psycopg.connect(database_url, autocommit=True) as conn:
            sweeps = conn.execute(RECORDED_SWEEPS, (round(elapsed),)).fetchone()[0]
        (env.log_dir / f"make-run-{'quiet' if quiet else 'baseline'}.log").write_text(running.log())
    finally:
        if running.process.poll() is None:
            running.ctrl_c()
            try:
                running.process.wait(15)
            except Exception:  # noqa: BLE001 - whatever is left is killed below
                pass
        running.kill_everything(alive(tree))
        redis.stop()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    per_minute = len(written) * 60 / elapsed
    say(
        f"{'quiet' if quiet else 'baseline'}: {len(written)} lines in {elapsed:.0f} s"
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
