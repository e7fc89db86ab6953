"""python -m bench [scenario ...] [--quick] [--million] (see bench/README.md)."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime

from bench import report
from bench.common import loadavg, say
from bench.env import ROOT, prepare
from bench.procs import REGISTRY

SCENARIOS = (
    "ingest",
    "ingest_ratelimit",
    "fanout",
    "inbox",
    "fanout_million",
    "realtime_latency",
    "realtime_fanout",
    "idle_connections",
    "fanout_rules",
    "templates",
    "template_corpus",
    "ordering",
    "sustained",
    "sustained_batch",
    "sustained_latency",
    "sustained_backpressure",
    "delivery_throughput",
    "delivery_latency",
    "sweep_saved_searches",
    "sweep_scaling",
    "sweep_reminders",
    "run_idle_output",
)
DEFAULT = ("ingest", "fanout", "inbox")


def _runner(name: str):
    if name == "ingest":
        from bench import ingest

        return ingest.run
    if name == "ingest_ratelimit":
        from bench import ratelimit

        return ratelimit.run
    if name == "fanout":
        from bench import fanout

        return fanout.run
    if name == "fanout_million":
        from bench import fanout

        return fanout.run_million
    if name == "inbox":
        from bench import inbox

        return inbox.run
    if name in ("realtime_latency", "realtime_fanout"):
        from bench import realtime

        return realtime.run_latency if name == "realtime_latency" else realtime.run_fanout
    if name in ("fanout_rules", "templates"):
        from bench import rules

        return rules.run if name == "fanout_rules" else rules.run_templates
    if name == "template_corpus":
        from bench import template_corpus

        return template_corpus.run
    if name == "ordering":
        from bench import ordering

        return ordering.run
    if name.startswith("sustained"):
        from bench import sustained

        return {
            "sustained": sustained.run,
            "sustained_batch": sustained.run_batch,
            "sustained_latency": sustained.run_latency,
            "sustained_backpressure": sustained.run_backpressure,
        }[name]
    if name == "idle_connections":
        from bench import idle

        return idle.run
    if name in ("delivery_throughput", "delivery_latency"):
        from bench import delivery

        return delivery.run_throughput if name == "delivery_throughput" else delivery.run_latency
    if name.startswith("sweep_"):
        from bench import triggers

        return {
            "sweep_saved_searches": triggers.run_saved_searches,
            "sweep_scaling": triggers.run_scaling,
            "sweep_reminders": triggers.run_reminders,
        }[name]
    if name == "run_idle_output":
        from bench import run_output

        return run_output.run
    raise KeyError(name)


def _git() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_files": len(git("status", "--porcelain").splitlines()),
    }


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"any of {', '.join(SCENARIOS)} (default: {' '.join(DEFAULT)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and shorter loads (~1-2 min)"
    )
    parser.add_argument(
        "--million", action="store_true", help="also run fanout_million (1M-subscriber topic)"
    )
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "aiohttp"],
        default="auto",
        help="HTTP load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="ingest: py-spy a web worker during an extra single-POST phase",
    )
    parser.add_argument(
        "--web-command",
        metavar="CMD",
        help="experiment: web server command instead of the Procfile's web line,"
        " with {host} and {port}, e.g. 'gunicorn config.wsgi:application -w 8 -b {host}:{port}'",
    )
    parser.add_argument(
        "--rates",
        metavar="R1,R2,...",
        help="sustained*: the rates to step through (events/s), e.g. 1000,1200,1400",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        metavar="S",
        help="sustained*: seconds at each rate (default 300; sustained_latency 600)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="run each scenario N times and report the median of each figure with its"
        " spread (default 3; --quick 1; the sustained* scenarios repeat inside: --runs)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="sustained*: repeat the whole measurement N times (default 3; --quick 1)",
    )
    args = parser.parse_args(argv)
    names = list(args.scenarios or DEFAULT)
    if args.million and "fanout_million" not in names:
        names.append("fanout_million")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C always interrupts (and cleans up), even when started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    run_meta = {
        "started_at": datetime.now(UTC).isoformat(),
        "stamp": stamp,
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "web_command": args.web_command or "Procfile web line",
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": loadavg(),
        "git": _git(),
    }
    results: dict[str, dict] = {}
    interrupted = False
    try:
        say(f"scenarios: {', '.join(names)}{' (quick)' if args.quick else ''}")
        env = prepare(stamp)
        run_meta["services"] = env.describe()
        run_meta["logs"] = str(env.log_dir)
        for name in names:
            say(f"=== {name} ===")
            t0 = time.monotonic()
            # sustained* and delivery_throughput repeat inside (runs, clean/failing pairs).
            inside = name.startswith("sustained") or name in (
                "delivery_throughput",
                "sweep_saved_searches",
            )
            repeat = 1 if inside else (args.repeat or (1 if args.quick else 3))
            runs = []
            for attempt in range(repeat):
                if repeat > 1:
                    say(f"--- {name}: run {attempt + 1} of {repeat} ---")
                try:
                    runs.append(_runner(name)(env, args))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - record it, go on with the next scenario
                    traceback.print_exc()
                    runs.append(
                        {
                            "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(),
                            "metrics": [],
                        }
                    )
                    break
                finally:
                    REGISTRY.stop_all()
            result = runs[0] if len(runs) == 1 else report.merge_runs(runs)
            result["seconds"] = round(time.monotonic() - t0, 1)
            result["git"] = _git()  # the app may change between scenarios of a long run
            result["loadavg_end"] = loadavg()
            results[name] = result
            path = report.write(name, stamp, {"run": run_meta, "scenario": name, **result})
            say(f"{name} done in {result['seconds']:.0f}s -> {path.relative_to(ROOT)}")
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted; stopping everything the bench started")
    finally:
        REGISTRY.stop_all()
    run_meta["seconds"] = round(time.monotonic() - started, 1)
    run_meta["interrupted"] = interrupted
    if results:
        print()
        print(report.table(results))
        print()
        path = report.write_latest({"run": run_meta, "scenarios": results})
        say(f"results: {path.relative_to(ROOT)} (total {run_meta['seconds']:.0f}s)")
    if interrupted:
        return 130
    failed = any(r.get("error") for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
