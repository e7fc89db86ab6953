"""Scenarios `sustained`, `sustained_batch`, `sustained_latency`, `sustained_backpressure`.

Minutes of fixed-rate load against the stack as `make run` lays it out (the
Procfile's web line, worker_urgent, worker_bulk and beat, each with its
Procfile concurrency), on the bench database and Redis db.

The load comes from `bench.openloop` (open loop: request n of a step is due at
t + n/rate whatever earlier ones did). Events name 2 explicit recipients from
a pool of 2,000 and one in-app type. Every `PROBE_EVERY`-th request is a
*probe*: a single event to the watched recipient (plus one pool recipient),
whose `data` carries its send time; one websocket of the watched recipient
(`bench.wsclients`, passive) measures POST -> notification frame.

Every 10 s the bench records: answers per second by status, fan-out drain per
second (accepted minus the change in events waiting), events waiting, Celery
queue depths, POST -> frame p50/p95/p99 of the probes sent in the window and
CPU (cores) per process group.

* `sustained`: single `POST /api/v1/events`, stepping through `--rates`
  (default 800,1000,1200,1400,1600,1800 events/s), `--step-seconds` each
  (default 300). A step is **sustainable** when, over its last 180 s
  (`--quick`: its last half): every offered event got its 202 (>= 99.5%),
  events waiting are flat (fitted growth over the window <= max(5% of their
  mean, half a second of offered events)) and POST -> frame p95 < 100 ms.
  Stepping stops at the first step whose backlog is not flat (or whose events
  were not all accepted); the highest sustainable rate is the highest step
  that passed every check, and the highest rate that kept up (backlog flat,
  latency aside) is reported beside it. `--runs` (default 3) repeats the whole stepping;
  the table shows the median and the spread (min-max) over the runs.
* `sustained_batch`: the same through `POST /api/v1/events/batch` (100 events
  per request; rates in events/s, default 10,000,15,000,20,000,25,000); the
  probes stay single POSTs.
* `sustained_latency`: 100 events/s to the watched recipient alone for 600 s
  (`--step-seconds`); per minute POST -> frame p50/p95/p99 (the recipient
  ends with 60,000 unread notifications: a push must not cost more with them).
* `sustained_backpressure`: normal-priority events at 3x the first of
  `--rates` (default 3 x 1,200/s) for `--step-seconds` (default 300), with
  critical probes (20/s): per window the 202 and 429 answers, the fan-out
  backlog age, and the critical events' POST -> frame latency.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict

from bench import data
from bench.common import metric, percentile, say, warn
from bench.env import BenchEnv, checkpoint
from bench.procs import REGISTRY, CpuMeter, listener_pid, procfile_command, start_web, start_worker
from bench.realtime import ClientGroup, api_key, log_problems, tokens_via_api, wait_quiet

TYPE_KEY = "bench.sustained"
WATCHED = "sus-watched"
POOL = 2000
PROBE_RATE = 20.0  # probes per second, whatever the load's rate
WINDOW_S = 10.0
JUDGE_S = 180.0
BATCH_SIZE = 100
P95_GOAL_MS = 100.0
ACCEPT_SHARE = 0.995
FLAT_SHARE = 0.05
FLAT_FLOOR_S = 0.5
DEFAULT_RATES = {
    "sustained": [800, 1000, 1200, 1400, 1600, 1800],
    "sustained_batch": [10000, 15000, 20000, 25000],
    "sustained_latency": [100],
    "sustained_backpressure": [1200],
}


# --------------------------------------------------------------------------- #
# the stack and the load
# --------------------------------------------------------------------------- #


class Stack:
    """web, worker_urgent, worker_bulk and beat as the Procfile starts them."""

    def __init__(self, env: BenchEnv, opts) -> None:
        self.urgent = start_worker(env, "worker_urgent")
        self.bulk = start_worker(env, "worker_bulk")
        beat_argv = procfile_command("beat", {})
        self.beat = REGISTRY.start(
            "beat", beat_argv, env=env.child_env(), log_path=env.log_dir / "beat.log"
        )
        self.web, self.base = start_web(env, command=opts.web_command)
        self.bearer = api_key(env, "bench-sustained")
        self.pg_pid = listener_pid(_port(env.database_url) or 5432)
        self.redis_pid = listener_pid(_port(env.redis_url) or 6379)

    def groups(self, extra: dict[str, list[int]]) -> dict[str, list[int]]:
        groups = {
            "web": [self.web.pid],
            "worker_urgent": [self.urgent.pid],
            "worker_bulk": [self.bulk.pid],
            "beat": [self.beat.pid],
            "postgres": [self.pg_pid] if self.pg_pid else [],
            "redis": [self.redis_pid] if self.redis_pid else [],
        }
        groups.update(extra)
        groups["bench"] = [os.getpid()]
        return groups

    def problems(self) -> dict:
        return {
            m.name: log_problems(m.log_path) for m in (self.web, self.urgent, self.bulk, self.beat)
        }


def _port(url: str) -> int | None:
    from urllib.parse import urlsplit

    return urlsplit(url).port


def _ensure_type(stack: Stack) -> None:
    from bench.procs import http_json

    http_json(
        "PUT",
        f"{stack.base}/api/v1/notification-types/{TYPE_KEY}",
        token=stack.bearer,
        body={
            "channels": ["in_app"],
            "category": "bench",
            "templates": {"in_app": {"en": {"title": "Sustained {{ seq }}"}}},
        },
    )


def _bodies(mode: str, priority: str | None) -> list[str]:
    """Request bodies sent round-robin: pairs of pool recipients (batch: 100 events a body)."""
    extra = {"priority": priority} if priority else {}
    events = [
        {
            "type": TYPE_KEY,
            "recipients": [f"sus-{(i * 2) % POOL}", f"sus-{(i * 2 + 1 + i // (POOL // 2)) % POOL}"],
            "actor": "bench",
            "data": {"n": i},
            **extra,
        }
        for i in range(POOL * 2)
    ]
    if mode != "batch":
        return [json.dumps(e, separators=(",", ":")) for e in events]
    return [
        json.dumps({"events": events[i : i + BATCH_SIZE]}, separators=(",", ":"))
        for i in range(0, len(events), BATCH_SIZE)
    ]


class Load:
    """One `bench.openloop` process; its JSON lines collected by a thread."""

    def __init__(
        self,
        env: BenchEnv,
        stack: Stack,
        *,
        name: str,
        steps: list[dict],
        mode: str,
        request_rate_factor: float,
        probe_every: int,
        probe_recipients: list[str],
        priority: str | None = None,
        probe_priority: str | None = None,
        max_connections: int = 256,
    ) -> None:
        spec = {
            "base": stack.base,
            "authorization": stack.bearer,
            "mode": mode,
            "path": "/api/v1/events/batch" if mode == "batch" else "/api/v1/events",
            "bodies": _bodies(mode, priority),
            "probe_every": probe_every,
            "probe_type": TYPE_KEY,
            "probe_recipients": probe_recipients,
            "probe_priority": probe_priority,
            "steps": [{**s, "rate": s["rate"] * request_rate_factor} for s in steps],
            "window": WINDOW_S,
            "max_connections": max_connections,
        }
        spec_path = env.log_dir / f"openloop-{name}.json"
        spec_path.write_text(json.dumps(spec))
        self.managed = REGISTRY.start(
            f"openloop-{name}",
            [sys.executable, "-m", "bench.openloop", str(spec_path)],
            env=env.child_env(),
            log_path=None,
            stdout=subprocess.PIPE,
        )
        self.lines: list[dict] = []
        self.cond = threading.Condition()
        self.ended = False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._stderr, daemon=True).start()

    def _read(self) -> None:
        for raw in self.managed.popen.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(obj)
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def _stderr(self) -> None:
        text = self.managed.popen.stderr.read()
        if text:
            warn(f"{self.managed.name} stderr: {text.decode(errors='replace')[-2000:]}")

    def next_line(self, index: int, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.lines) <= index:
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))
            return self.lines[index]


# --------------------------------------------------------------------------- #
# sampling
# --------------------------------------------------------------------------- #


class Sampler:
    """Database and broker figures sampled at each window's end."""

    def __init__(self, env: BenchEnv) -> None:
        self.conn = env.connect()
        self.redis = env.redis()

    def waiting(self) -> tuple[int, float]:
        """Events waiting for their first fan-out page and the oldest one's age (s)."""
        row = self.conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)"
            " FROM notifications_event WHERE status = 'accepted'"
        ).fetchone()
        return int(row[0]), round(float(row[1]), 2)

    def queues(self) -> dict[str, int]:
        depths = {}
        for key in self.redis.scan_iter(count=1000):
            try:
                if self.redis.type(key) == b"list":
                    name = key.decode(errors="replace")
                    if not name.startswith("_kombu"):
                        depths[name] = self.redis.llen(key)
            except Exception:  # noqa: BLE001 - a key that vanished between scan and type
                continue
        return depths

    def close(self) -> None:
        self.conn.close()


def _frame_latencies(clients: ClientGroup, label: str) -> list[tuple[float, float]]:
    """(sent, POST -> frame seconds) of the probes of one step, first arrival of each."""
    seen = {}
    for frame in clients.snapshot("f"):
        if frame.get("round") == label and frame.get("sent") is not None:
            key = frame.get("seq")
            if key not in seen:
                seen[key] = (frame["sent"], frame["t"] - frame["sent"])
    return sorted(seen.values())


def _summary_ms(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50) * 1000, 1),
        "p95": round(percentile(ordered, 95) * 1000, 1),
        "p99": round(percentile(ordered, 99) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def _growth(windows: list[dict]) -> float:
    """Least-squares slope of events waiting over the windows, times their span (events)."""
    points = [((w["t1"]), w["waiting"]) for w in windows]
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_w = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    slope = sum((t - mean_t) * (v - mean_w) for t, v in points) / var
    return slope * (points[-1][0] - points[0][0])


# --------------------------------------------------------------------------- #
# one run: a load process stepping through rates, sampled every window
# --------------------------------------------------------------------------- #


def _run_steps(
    env: BenchEnv,
    stack: Stack,
    clients: ClientGroup,
    *,
    run_label: str,
    rates: list[float],
    step_seconds: float,
    judge_seconds: float,
    mode: str,
    stop_on_failure: bool,
    probe_only: bool = False,
    priority: str | None = None,
    probe_priority: str | None = None,
) -> list[dict]:
    steps = [
        {"rate": rate, "seconds": step_seconds, "label": f"{run_label}-{int(rate)}"}
        for rate in rates
    ]
    factor = 1.0 / BATCH_SIZE if mode == "batch" else 1.0
    request_rate = [s["rate"] * factor for s in steps]
    probe_every = (
        1 if probe_only else max(1, round(min(request_rate) / PROBE_RATE)) if mode != "batch" else 0
    )
    if mode == "batch":
        # Probes go as single POSTs from a second, slow generator.
        probes = Load(
            env,
            stack,
            name=f"{run_label}-probes",
            mode="single",
            request_rate_factor=1.0,
            steps=[
                {"rate": PROBE_RATE, "seconds": step_seconds, "label": s["label"]} for s in steps
            ],
            probe_every=1,
            probe_recipients=[WATCHED, "sus-0"],
            max_connections=16,
        )
    else:
        probes = None
    load = Load(
        env,
        stack,
        name=run_label,
        steps=steps,
        mode=mode,
        request_rate_factor=factor,
        probe_every=probe_every,
        probe_recipients=[WATCHED] if probe_only else [WATCHED, "sus-1"],
        priority=priority,
        probe_priority=probe_priority,
    )
    extra_groups = {
        "load generator": [load.managed.pid] + ([probes.managed.pid] if probes else []),
        "ws client": clients.pids(),
    }
    sampler = Sampler(env)
    meter = CpuMeter(stack.groups(extra_groups))
    results: list[dict] = []
    index = 0
    if load.next_line(index, 60) is None:
        raise RuntimeError("load generator did not start")
    index += 1
    if probes is not None and probes.next_line(0, 60) is None:
        raise RuntimeError("probe generator did not start")
    meter.start()
    current: list[dict] = []
    step_index = 0
    waiting_before = sampler.waiting()[0]
    while True:
        line = load.next_line(index, step_seconds + 120)
        if line is None:
            raise RuntimeError("load generator stopped answering")
        index += 1
        if line["k"] == "w":
            waiting, oldest = sampler.waiting()
            cpu = meter.stop()
            meter.start()
            span = max(line["t1"] - line["t0"], 1e-6)
            status = line["status"]
            accepted = line["items"] if mode == "batch" else status.get("202", 0)
            window = {
                "t0": line["t0"],
                "t1": line["t1"],
                "rate": steps[line["step"]]["rate"],
                "offered_per_s": round(
                    line["due"] / span * (BATCH_SIZE if mode == "batch" else 1), 1
                ),
                "accepted_per_s": round(accepted / span, 1),
                "status_per_s": {k: round(v / span, 1) for k, v in status.items()},
                "errors": line["errors"],
                "in_line": line["in_line"],
                "connections": line["connections"],
                "post_p95_ms": line["p95_ms"],
                "waiting": waiting,
                "oldest_waiting_s": oldest,
                "drain_per_s": round((accepted - (waiting - waiting_before)) / span, 1),
                "queues": sampler.queues(),
                "cpu_cores": {k: v for k, v in cpu.items() if not k.startswith("_")},
            }
            waiting_before = waiting
            current.append(window)
            say(
                f"  {steps[line['step']]['label']} t+{line['t1'] - current[0]['t0']:5.0f}s"
                f" offered {window['offered_per_s']:8,.0f}/s"
                f" accepted {window['accepted_per_s']:8,.0f}/s"
                f" drain {window['drain_per_s']:8,.0f}/s"
                f" waiting {waiting:7,} (oldest {oldest:5.1f}s)"
                f" queues {sum(window['queues'].values()):6,}"
                + (f" 429/s {window['status_per_s'].get('429', 0):,.0f}" if "429" in status else "")
            )
        elif line["k"] == "step":
            step = steps[step_index]
            result = _judge(step, current, clients, judge_seconds, mode, probes=probes, env=env)
            results.append(result)
            say(
                f"step {step['label']}:"
                f" {'SUSTAINABLE' if result['sustainable'] else 'not sustainable'}"
                f" ({'; '.join(result['reasons']) or 'all checks passed'});"
                f" frame {result['frame_ms']};"
                f" stages p50/p95 ms: "
                + ", ".join(
                    f"{k} {v.get('p50')}/{v.get('p95')}" for k, v in result["stages"].items()
                )
            )
            current = []
            step_index += 1
            if stop_on_failure and not result["keeps_up"]:
                REGISTRY.stop(load.managed)
                if probes is not None:
                    REGISTRY.stop(probes.managed)
                break
        elif line["k"] == "done":
            break
    sampler.close()
    if probes is not None:
        REGISTRY.stop(probes.managed)
    REGISTRY.stop(load.managed)
    return results


def _stages(env: BenchEnv, clients: ClientGroup, label: str, since: float) -> dict:
    """Where a probe's time goes, from its event row (now() is the transaction
    start): POST -> accept transaction, accept -> fan-out transaction (waiting
    for a sweep), fan-out transaction -> frame (writing, commit, push)."""
    frames = {}
    for frame in clients.snapshot("f"):
        if frame.get("round") == label and frame.get("seq") is not None:
            frames.setdefault(frame["seq"], frame["t"])
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT (data->>'seq')::int, (data->>'sent_at')::float8,"
            " extract(epoch FROM created_at)::float8,"
            " extract(epoch FROM finished_at)::float8 FROM notifications_event"
            " WHERE data->>'round' = %s AND (data->>'sent_at')::float8 >= %s",
            (label, since),
        ).fetchall()
    post, wait, push = [], [], []
    for seq, sent, created, finished in rows:
        post.append(created - sent)
        if finished is not None:
            wait.append(finished - created)
            if seq in frames:
                push.append(frames[seq] - finished)
    return {
        "post_to_accept_tx_ms": _summary_ms(post),
        "accept_tx_to_fanout_tx_ms": _summary_ms(wait),
        "fanout_tx_to_frame_ms": _summary_ms(push),
    }


def _judge(
    step: dict,
    windows: list[dict],
    clients: ClientGroup,
    judge_seconds: float,
    mode: str,
    probes: Load | None,
    env: BenchEnv | None = None,
) -> dict:
    time.sleep(1.0)  # the last probes' frames
    end = windows[-1]["t1"] if windows else time.time()
    judged = [w for w in windows if w["t0"] >= end - judge_seconds - 1]
    frames = _frame_latencies(clients, step["label"])
    for w in windows:
        w["frame_ms"] = _summary_ms([lat for sent, lat in frames if w["t0"] <= sent < w["t1"]])
    judged_frames = [lat for sent, lat in frames if judged and sent >= judged[0]["t0"]]
    span = (judged[-1]["t1"] - judged[0]["t0"]) if judged else 0.0
    offered = sum(w["offered_per_s"] * (w["t1"] - w["t0"]) for w in judged)
    accepted = sum(w["accepted_per_s"] * (w["t1"] - w["t0"]) for w in judged)
    waiting = [w["waiting"] for w in judged]
    growth = _growth(judged)
    allowed = max(
        FLAT_SHARE * (statistics.fmean(waiting) if waiting else 0), FLAT_FLOOR_S * step["rate"]
    )
    latency = _summary_ms(judged_frames)
    reasons = []
    if offered and accepted < ACCEPT_SHARE * offered:
        reasons.append(f"accepted {accepted / offered:.1%} of offered")
    if growth > allowed:
        reasons.append(f"events waiting grew by {growth:,.0f} (allowed {allowed:,.0f})")
    keeps_up = not reasons  # the throughput half: stepping goes on while this holds
    if not latency.get("count"):
        reasons.append("no probe frames")
    elif latency["p95"] >= P95_GOAL_MS:
        reasons.append(f"POST -> frame p95 {latency['p95']} ms")
    cpu: dict[str, float] = defaultdict(float)
    for w in judged:
        for k, v in w["cpu_cores"].items():
            cpu[k] += v / len(judged)
    stages = (
        _stages(env, clients, step["label"], judged[0]["t0"]) if env is not None and judged else {}
    )
    return {
        "label": step["label"],
        "rate": step["rate"],
        "sustainable": not reasons,
        "reasons": reasons,
        "keeps_up": keeps_up,
        "stages": stages,
        "judged_seconds": round(span, 1),
        "accepted_per_s": round(accepted / span, 1) if span else None,
        "drain_per_s": round(statistics.fmean(w["drain_per_s"] for w in judged), 1)
        if judged
        else None,
        "waiting_mean": round(statistics.fmean(waiting), 1) if waiting else None,
        "waiting_first_last": [waiting[0], waiting[-1]] if waiting else None,
        "waiting_growth": round(growth, 1),
        "waiting_allowed": round(allowed, 1),
        "frame_ms": latency,
        "cpu_cores": {k: round(v, 3) for k, v in cpu.items()},
        "windows": windows,
    }


# --------------------------------------------------------------------------- #
# the scenarios
# --------------------------------------------------------------------------- #


def _prepare(env: BenchEnv, opts, label: str) -> tuple[Stack, ClientGroup]:
    wait_quiet(label, max_wait=180)
    _clean(env)
    env.redis().flushdb()
    checkpoint(env)
    stack = Stack(env, opts)
    _ensure_type(stack)
    token = tokens_via_api(stack.base, stack.bearer, [WATCHED])[0]
    clients = ClientGroup(
        env,
        label=label,
        mode="latency",
        base=stack.base,
        tokens=[token],
        processes=1,
        in_flight=1,
        extra_spec={"resume": False},
    )
    clients.ready()
    connected = clients.connect(60)
    if connected["ok"] != 1:
        raise RuntimeError(f"websocket client: {connected}")
    return stack, clients


def _clean(env: BenchEnv) -> None:
    """Delete this scenario's events, then vacuum: the dead entries of the
    waiting-events index would otherwise slow every sweep of the next run."""
    data.delete_events_of_type(env, TYPE_KEY)
    data.vacuum(
        env, "notifications_event", "notifications_notification", "notifications_unreadcount"
    )


def _warm_up(env: BenchEnv, stack: Stack, clients: ClientGroup) -> None:
    """Every pool recipient exists and each process has served requests before measuring."""
    say(f"warm-up: {POOL * 2:,} events over the {POOL:,} pool recipients")
    _run_steps(
        env,
        stack,
        clients,
        run_label="warm",
        rates=[400.0],
        step_seconds=10,
        judge_seconds=10,
        mode="single",
        stop_on_failure=False,
    )
    _wait_drained(env, 120)


def _wait_drained(env: BenchEnv, timeout: float) -> float:
    sampler = Sampler(env)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout and sampler.waiting()[0]:
            time.sleep(0.5)
    finally:
        sampler.close()
    return round(time.monotonic() - t0, 1)


def _settings(opts, name: str) -> tuple[list[float], float, float, int]:
    rates = (
        [float(r) for r in opts.rates.split(",")]
        if getattr(opts, "rates", None)
        else DEFAULT_RATES[name]
    )
    default_seconds = 600.0 if name == "sustained_latency" else 300.0
    seconds = (
        float(opts.step_seconds)
        if getattr(opts, "step_seconds", None)
        else (60.0 if opts.quick else default_seconds)
    )
    judge = min(JUDGE_S, seconds / 2) if opts.quick or seconds < 2 * JUDGE_S - 60 else JUDGE_S
    runs = int(opts.runs) if getattr(opts, "runs", None) else (1 if opts.quick else 3)
    return rates, seconds, judge, runs


def _spread(values: list[float]) -> dict:
    return (
        {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": values,
        }
        if values
        else {"median": None}
    )


def run_rates(env: BenchEnv, opts, *, name: str = "sustained") -> dict:
    mode = "batch" if name == "sustained_batch" else "single"
    rates, seconds, judge, runs = _settings(opts, name)
    stack, clients = _prepare(env, opts, name)
    _warm_up(env, stack, clients)
    all_runs = []
    for run in range(runs):
        wait_quiet(f"{name} run {run + 1}/{runs}", max_wait=120, busy_max=0.6)
        say(
            f"{name} run {run + 1}/{runs}: rates {', '.join(f'{r:,.0f}' for r in rates)} events/s,"
            f" {seconds:.0f}s each (judged on the last {judge:.0f}s)"
        )
        steps = _run_steps(
            env,
            stack,
            clients,
            run_label=f"r{run + 1}",
            rates=rates,
            step_seconds=seconds,
            judge_seconds=judge,
            mode=mode,
            stop_on_failure=True,
        )
        best = max((s["rate"] for s in steps if s["sustainable"]), default=0.0)
        kept_up = max((s["rate"] for s in steps if s["keeps_up"]), default=0.0)
        all_runs.append(
            {
                "run": run + 1,
                "highest_sustainable": best,
                "highest_keeping_up": kept_up,
                "steps": steps,
                "drain_after_s": _wait_drained(env, 600),
            }
        )
        say(f"{name} run {run + 1}: highest sustainable rate {best:,.0f} events/s")
    problems = stack.problems()
    clients.close(30)
    _clean(env)
    highest = _spread([r["highest_sustainable"] for r in all_runs])
    keeping_up = _spread([r["highest_keeping_up"] for r in all_runs])
    by_rate: dict[float, list[dict]] = defaultdict(list)
    for r in all_runs:
        for s in r["steps"]:
            by_rate[s["rate"]].append(s)
    goal = 15000 if mode == "batch" else 1200
    metrics = [
        metric(
            f"highest sustainable rate, median of {runs} run(s) (min-max"
            f" {highest['min']:,.0f}-{highest['max']:,.0f})",
            highest["median"],
            "ev/s",
            at_least=goal,
        ),
        metric(
            f"highest rate with the backlog flat, latency aside (min-max {keeping_up['min']:,.0f}-"
            f"{keeping_up['max']:,.0f})",
            keeping_up["median"],
            "ev/s",
        ),
    ]
    for rate, steps in sorted(by_rate.items()):
        p95 = [s["frame_ms"].get("p95") for s in steps if s["frame_ms"].get("p95") is not None]
        drain = [s["drain_per_s"] for s in steps if s["drain_per_s"] is not None]
        ok = sum(1 for s in steps if s["sustainable"])
        metrics.append(
            metric(
                f"{rate:,.0f}/s: sustainable in {ok}/{len(steps)};"
                f" frame p95 median {_med(p95)} ms; drain median {_med(drain)}/s;"
                f" waiting growth {[s['waiting_growth'] for s in steps]}",
                ok,
                "",
            )
        )
        cpu = _cpu_median(steps)
        metrics.append(
            metric(
                f"{rate:,.0f}/s: CPU cores by group (median)",
                ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()),
                "",
            )
        )
    return {
        "metrics": metrics,
        "details": {
            "mode": mode,
            "rates": rates,
            "step_seconds": seconds,
            "judge_seconds": judge,
            "runs": all_runs,
            "highest_sustainable": highest,
            "log_problems": problems,
            "layout": {
                "web": stack.web.argv,
                "worker_urgent": stack.urgent.argv,
                "worker_bulk": stack.bulk.argv,
                "beat": stack.beat.argv,
            },
        },
    }


def _med(values: list[float]):
    return round(statistics.median(values), 1) if values else None


def _cpu_median(steps: list[dict]) -> dict[str, float]:
    keys = sorted({k for s in steps for k in s["cpu_cores"]})
    return {k: statistics.median(s["cpu_cores"].get(k, 0.0) for s in steps) for k in keys}


def run(env: BenchEnv, opts) -> dict:
    return run_rates(env, opts, name="sustained")


def run_batch(env: BenchEnv, opts) -> dict:
    return run_rates(env, opts, name="sustained_batch")


def run_latency(env: BenchEnv, opts) -> dict:
    """100 events/s to one recipient; per-minute POST -> frame."""
    rates, seconds, _, runs = _settings(opts, "sustained_latency")
    rate = rates[0]
    stack, clients = _prepare(env, opts, "sustained_latency")
    all_runs = []
    for run in range(runs):
        say(
            f"sustained_latency run {run + 1}/{runs}:"
            f" {rate:g} events/s to {WATCHED} for {seconds:.0f}s"
        )
        steps = _run_steps(
            env,
            stack,
            clients,
            run_label=f"lat{run + 1}",
            rates=[rate],
            step_seconds=seconds,
            judge_seconds=min(60.0, seconds),
            mode="single",
            stop_on_failure=False,
            probe_only=True,
        )
        frames = _frame_latencies(clients, steps[0]["label"])
        start = steps[0]["windows"][0]["t0"]
        minutes = []
        for m in range(int(seconds // 60) or 1):
            lat = [x for sent, x in frames if start + 60 * m <= sent < start + 60 * (m + 1)]
            minutes.append({"minute": m + 1, **_summary_ms(lat)})
        unread = _unread(env)
        all_runs.append(
            {"run": run + 1, "minutes": minutes, "unread_at_end": unread, "step": steps[0]}
        )
        say(
            "per minute p50/p95 ms: "
            + "  ".join(f"{x['minute']}: {x.get('p50')}/{x.get('p95')}" for x in minutes)
        )
    problems = stack.problems()
    clients.close(30)
    _clean(env)
    metrics = []
    first = [r["minutes"][0] for r in all_runs]
    last = [r["minutes"][-1] for r in all_runs]
    for name, picks in (("first minute", first), ("last minute", last)):
        metrics.append(
            metric(
                f"{name}: POST -> frame p50 (median of runs)",
                _med([x["p50"] for x in picks]),
                "ms",
                below=20.0,
            )
        )
        metrics.append(
            metric(
                f"{name}: POST -> frame p95 (median of runs)",
                _med([x["p95"] for x in picks]),
                "ms",
                below=50.0,
            )
        )
    metrics.append(
        metric(
            "unread notifications of the recipient at the end", all_runs[-1]["unread_at_end"], ""
        )
    )
    return {
        "metrics": metrics,
        "details": {"rate": rate, "seconds": seconds, "runs": all_runs, "log_problems": problems},
    }


def _unread(env: BenchEnv) -> int:
    with env.connect() as conn:
        return conn.execute(
            "SELECT count(*) FROM notifications_notification n JOIN notifications_recipient r"
            " ON r.id = n.recipient_id WHERE r.external_id = %s AND n.read_at IS NULL"
            " AND n.archived_at IS NULL AND n.visible",
            (WATCHED,),
        ).fetchone()[0]


def run_backpressure(env: BenchEnv, opts) -> dict:
    """Normal events at 3x a sustainable rate; critical probes must still be fast."""
    rates, seconds, judge, runs = _settings(opts, "sustained_backpressure")
    offered = 3 * rates[0]
    stack, clients = _prepare(env, opts, "sustained_backpressure")
    _warm_up(env, stack, clients)
    all_runs = []
    for run in range(runs):
        wait_quiet(f"sustained_backpressure run {run + 1}/{runs}", max_wait=120, busy_max=0.6)
        say(
            f"sustained_backpressure run {run + 1}/{runs}: normal events at {offered:,.0f}/s"
            f" (3 x {rates[0]:,.0f}) for {seconds:.0f}s, critical probes {PROBE_RATE:g}/s"
        )
        steps = _run_steps(
            env,
            stack,
            clients,
            run_label=f"bp{run + 1}",
            rates=[offered],
            step_seconds=seconds,
            judge_seconds=judge,
            mode="single",
            stop_on_failure=False,
            priority="normal",
            probe_priority="critical",
        )
        step = steps[0]
        judged = [w for w in step["windows"] if w["t0"] >= step["windows"][-1]["t1"] - judge - 1]
        all_runs.append(
            {
                "run": run + 1,
                "critical_frame_ms": step["frame_ms"],
                "accepted_per_s": step["accepted_per_s"],
                "refused_429_per_s": round(
                    statistics.fmean(w["status_per_s"].get("429", 0) for w in judged), 1
                ),
                "oldest_waiting_s": [w["oldest_waiting_s"] for w in judged],
                "waiting_growth": step["waiting_growth"],
                "cpu_cores": step["cpu_cores"],
                "step": step,
                "drain_after_s": _wait_drained(env, 900),
            }
        )
        say(
            f"run {run + 1}: critical POST -> frame {step['frame_ms']};"
            f" accepted {step['accepted_per_s']}/s;"
            f" 429 {all_runs[-1]['refused_429_per_s']}/s"
        )
    problems = stack.problems()
    clients.close(30)
    _clean(env)
    p95 = [
        r["critical_frame_ms"].get("p95")
        for r in all_runs
        if r["critical_frame_ms"].get("p95") is not None
    ]
    metrics = [
        metric(
            f"critical POST -> frame p95 under {offered:,.0f}/s normal (median of {runs})",
            _med(p95),
            "ms",
            below=100.0,
        ),
        metric(
            "normal events accepted (202) per s (median)",
            _med([r["accepted_per_s"] for r in all_runs]),
            "ev/s",
        ),
        metric(
            "normal events refused (429) per s (median)",
            _med([r["refused_429_per_s"] for r in all_runs]),
            "ev/s",
        ),
        metric(
            "events waiting growth over the judged window",
            str([r["waiting_growth"] for r in all_runs]),
            "",
        ),
    ]
    return {
        "metrics": metrics,
        "details": {
            "offered": offered,
            "seconds": seconds,
            "runs": all_runs,
            "log_problems": problems,
        },
    }
