"""Scenarios `realtime_latency` and `realtime_fanout`: the inbox websocket end to end.

Both run the real stack as subprocesses (the Procfile's web line, both Celery
worker lines, the bench database and Redis db) and real websocket clients in
client processes (`bench/wsclients.py`), with the Origin header the server's
http origin and recipient tokens from `POST /api/v1/recipients/{id}/token`.

* realtime_latency: `POST /api/v1/events` to one recipient at a steady 100
  events/s (open loop: each send at its scheduled time) for 60 s (`--quick`:
  15 s); the event's `data` carries its send time. Latency = POST start ->
  `notification` frame received, on each of the recipient's sockets (two tabs).
  A socket follows the protocol like the bell (`tests.wsclient.InboxSocket`):
  a `previous_id` gap makes it `resume`. Reported: p50/p95/p99/max, frames that
  needed a resume, frames lost (not received even after a final `resume`), and
  where the time goes (from the event row: accept -> fan-out start -> frame).
* realtime_fanout: a topic with 1,000 subscribers, all connected (4 client
  processes x 250 sockets, 200 handshakes in flight); connect time for all;
  then one event to the topic (3 rounds, `--quick` 2): POST -> first, median
  and last client's frame, and how many got it. The Redis connections of the
  bench Redis db are sampled meanwhile (the worker's push opens its own).

Helpers shared with `bench/idle.py`: `ClientGroup`, `wait_quiet`, `RedisClientSampler`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import psutil

from bench import data
from bench.common import latency_summary_ms, loadavg, metric, percentile, say, warn
from bench.env import BENCH_REDIS_DB, BenchEnv, checkpoint, db_activity
from bench.procs import REGISTRY, CpuMeter, http_json, listener_pid, start_web, start_worker

TYPE_KEY = "bench.realtime"
LATENCY_RECIPIENT = "bench-rt-1"
LATENCY_RATE = 100
LATENCY_SOCKETS = 2
GOAL_P50_MS = 20.0
GOAL_P95_MS = 50.0
FANOUT_SUBSCRIBERS = int(os.environ.get("CLARION_BENCH_FANOUT_CLIENTS", "1000"))
CLIENT_PROCESSES = 4
HANDSHAKES_IN_FLIGHT = 200


# --------------------------------------------------------------------------- #
# shared helpers
# --------------------------------------------------------------------------- #


def _own_tree() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids |= {p.pid for p in me.children(recursive=True)}
        pids |= {p.pid for p in me.parents()}
    except psutil.Error:
        pass
    return pids


def other_bench_runs() -> dict[int, str]:
    """Other `python -m bench` processes (not this run, its parents or its children)."""
    mine = _own_tree()
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.info["pid"] not in mine and "python -m bench" in cmd:
            found[proc.info["pid"]] = cmd[:120]
    return found


def _proc_cpu() -> dict[int, tuple[str, float]]:
    result = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        try:
            t = proc.info["cpu_times"]
            cmd = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or "?"
            result[proc.info["pid"]] = (cmd[:80], t.user + t.system)
        except (psutil.Error, TypeError, AttributeError):
            continue
    return result


def _busy_over(seconds: float) -> tuple[float, list[str], dict[int, float]]:
    """System CPU busy share over `seconds`, the top processes, and CPU share per pid in that
    window."""
    before = _proc_cpu()
    psutil.cpu_percent(interval=None)
    time.sleep(seconds)
    busy = psutil.cpu_percent(interval=None) / 100.0
    after = _proc_cpu()
    share = {pid: (after[pid][1] - before[pid][1]) / seconds for pid in after if pid in before}
    top = sorted(((share[pid], after[pid][0]) for pid in share), reverse=True)[:3]
    return busy, [f"{used:.0%} {cmd}" for used, cmd in top if used > 0], share


def wait_quiet(label: str, *, max_wait: float = 900.0, busy_max: float = 0.35) -> dict:
    """Before a measurement: wait until no other bench run is active and the CPUs
    are nearly idle (busy share over 2 s below `busy_max`; the 1-min load
    average lags the previous phase of this very run, so it is recorded only).
    Another run blocked on the bench lock this run holds uses no CPU and is ignored."""
    t0 = time.monotonic()
    told = 0.0
    while True:
        others = other_bench_runs()
        busy, top, share = _busy_over(2.0)
        active = {pid: cmd for pid, cmd in others.items() if share.get(pid, 0.0) > 0.05}
        if not active and busy < busy_max:
            waited = round(time.monotonic() - t0, 1)
            if waited > 3:
                say(f"{label}: machine quiet after {waited:.0f}s (cpu busy {busy:.0%})")
            return {
                "waited_s": waited,
                "cpu_busy": round(busy, 3),
                "loadavg": loadavg(),
                "idle_other_bench_runs": list(others.values()),
            }
        if time.monotonic() - t0 > max_wait:
            warn(
                f"{label}: machine still busy after {max_wait:.0f}s (cpu {busy:.0%}, top {top},"
                f" other runs {list(active.values())}); measuring anyway"
            )
            return {
                "waited_s": round(time.monotonic() - t0, 1),
                "cpu_busy": round(busy, 3),
                "loadavg": loadavg(),
                "not_quiet": True,
                "other_runs": list(active.values()),
                "top": top,
            }
        if time.monotonic() - told > 30:
            told = time.monotonic()
            say(
                f"{label}: waiting for a quiet machine (cpu busy {busy:.0%}, load {loadavg()},"
                f" active other bench runs: {len(active)}; top: {'; '.join(top)})"
            )


class ClientGroup:
    """Websocket client processes (`python -m bench.wsclients`), spec split evenly."""

    def __init__(
        self,
        env: BenchEnv,
        *,
        label: str,
        mode: str,
        base: str,
        tokens: list[str],
        processes: int,
        in_flight: int,
        open_timeout: float = 30.0,
        extra_spec: dict | None = None,
    ):
        self.label = label
        self.procs = []
        self.lines: dict[str, list[dict]] = defaultdict(list)
        self.cond = threading.Condition()
        self.eof: set[str] = set()  # processes whose stdout ended (exited)
        self.kinds: dict[str, Counter] = defaultdict(Counter)  # per process: lines seen by kind
        processes = max(1, min(processes, len(tokens)))
        ws_url = base.replace("http://", "ws://") + "/ws/inbox/"
        per = -(-len(tokens) // processes)
        for i in range(processes):
            chunk = tokens[i * per : (i + 1) * per]
            spec = {
                "mode": mode,
                "ws_url": ws_url,
                "origin": base,
                "tokens": chunk,
                "index_base": i * per,
                "concurrency": max(1, in_flight // processes),
                "open_timeout": open_timeout,
                "log": str(env.log_dir / f"wsclients-{label}-{i}.log"),
                **(extra_spec or {}),
            }
            spec_path = env.log_dir / f"wsclients-{label}-{i}.spec.json"
            spec_path.write_text(json.dumps(spec))
            managed = REGISTRY.start(
                f"wsclients-{label}-{i}",
                [sys.executable, "-m", "bench.wsclients", str(spec_path)],
                env=env.child_env(),
                log_path=None,
                stdout=subprocess.PIPE,
            )
            self.procs.append(managed)
            threading.Thread(target=self._read, args=(managed,), daemon=True).start()
            threading.Thread(target=self._drain, args=(managed,), daemon=True).start()

    def _read(self, managed) -> None:
        for raw in managed.popen.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.lines[obj.get("k", "?")].append(obj)
                self.kinds[managed.name][obj.get("k", "?")] += 1
                self.cond.notify_all()
        with self.cond:
            self.eof.add(managed.name)
            self.cond.notify_all()

    @staticmethod
    def _drain(managed) -> None:
        text = managed.popen.stderr.read()
        if text:
            warn(f"{managed.name} stderr: {text.decode(errors='replace')[-2000:]}")

    def pids(self) -> list[int]:
        return [m.pid for m in self.procs]

    def wait(self, kind: str, count: int, timeout: float, *, what: str = "") -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.lines[kind]) < count:
                left = deadline - time.monotonic()
                dead = sorted(name for name in self.eof if not self.kinds[name][kind])
                if left <= 0 or (dead and len(self.lines[kind]) < count):
                    raise RuntimeError(
                        f"client processes: {len(self.lines[kind])}/{count} '{kind}' after"
                        f" {timeout - max(left, 0):.0f}s{' (' + what + ')' if what else ''};"
                        f" exited: {dead}"
                    )
                self.cond.wait(min(left, 1.0))
            return list(self.lines[kind])

    def count(self, kind: str, pred=None) -> int:
        with self.cond:
            items = self.lines[kind]
            return len(items) if pred is None else sum(1 for x in items if pred(x))

    def snapshot(self, kind: str) -> list[dict]:
        with self.cond:
            return list(self.lines[kind])

    def signal(self) -> None:
        for managed in self.procs:
            if managed.alive():
                os.kill(managed.pid, signal.SIGUSR1)

    def ready(self, timeout: float = 60.0) -> None:
        self.wait("ready", len(self.procs), timeout, what="start-up")

    def connect(self, timeout: float) -> dict:
        """Signal go; wait for every process's `connected`; merged result."""
        t_go = time.time()
        self.signal()
        reports = self.wait("connected", len(self.procs), timeout, what="connect")
        handshakes = [d for r in reports for d in r["handshake_s"]]
        errors: Counter = Counter()
        extensions: Counter = Counter()
        for r in reports:
            errors.update(r["errors"])
            extensions.update(r.get("extensions", {}))
        t_end = max(r["t_end"] for r in reports)
        return {
            "ok": sum(r["ok"] for r in reports),
            "failed": sum(r["failed"] for r in reports),
            "errors": dict(errors),
            "seconds_all": round(t_end - t_go, 3),
            "per_process_seconds": [round(r["t_end"] - r["t_start"], 3) for r in reports],
            "handshake_ms": latency_summary_ms(handshakes),
            "extensions": dict(extensions),
            "t_go": t_go,
            "t_end": t_end,
        }

    def close(self, timeout: float = 120.0) -> dict:
        t0 = time.time()
        self.signal()
        reports = self.wait("closed", len(self.procs), timeout, what="close")
        errors: Counter = Counter()
        for r in reports:
            errors.update(r["errors"])
        return {
            "closed": sum(r["n"] for r in reports),
            "errors": dict(errors),
            "seconds_all": round(max(r["t_end"] for r in reports) - t0, 3),
        }

    def stop(self) -> None:
        for managed in self.procs:
            try:
                managed.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
            REGISTRY.stop(managed)


class RedisClientSampler(threading.Thread):
    """Connections to the bench Redis db (CLIENT LIST, db=14), by last command,
    every `interval` s."""

    def __init__(self, env: BenchEnv, interval: float = 0.25):
        super().__init__(daemon=True, name="redis-clients")
        self.client = env.redis()
        self.interval = interval
        self.samples: list[tuple[float, int, dict]] = []
        self.marks: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> tuple[int, dict]:
        clients = [c for c in self.client.client_list() if str(c.get("db")) == str(BENCH_REDIS_DB)]
        by_cmd = Counter(c.get("cmd", "?") for c in clients)
        return len(clients), dict(by_cmd)

    def mark(self, label: str) -> None:
        self.marks.append((round(time.monotonic() - self.t0, 2), label))

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                total, by_cmd = self.sample()
                self.samples.append((round(time.monotonic() - self.t0, 2), total, by_cmd))
            except Exception:  # noqa: BLE001 - sampling only
                pass
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> dict:
        window = [s for s in self.samples if since <= s[0] <= until]
        if not window:
            return {"max": None}
        top = max(window, key=lambda s: s[1])
        return {"max": top[1], "at_s": top[0], "by_last_command": top[2], "samples": len(window)}

    def series(self, max_points: int = 300) -> list:
        step = max(1, len(self.samples) // max_points)
        return [(t, n) for t, n, _ in self.samples[::step]]


def api_key(env: BenchEnv, name: str) -> str:
    return "Bearer " + env.manage("create_api_key", name).strip().splitlines()[-1].strip()


def ensure_type(base: str, bearer: str) -> None:
    status, _ = http_json(
        "PUT",
        f"{base}/api/v1/notification-types/{TYPE_KEY}",
        token=bearer,
        body={
            "channels": ["in_app"],
            "category": "bench",
            "templates": {"in_app": {"en": {"title": TYPE_KEY}}},
        },
    )
    say(f"notification type {TYPE_KEY} ready (HTTP {status}, channels in_app)")


def tokens_via_api(base: str, bearer: str, external_ids: list[str], threads: int = 8) -> list[str]:
    def one(external_id: str) -> str:
        return http_json("POST", f"{base}/api/v1/recipients/{external_id}/token", token=bearer)[1][
            "token"
        ]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        tokens = list(pool.map(one, external_ids))
    say(
        f"{len(tokens):,} recipient tokens via POST /api/v1/recipients/{{id}}/token"
        f" in {time.perf_counter() - t0:.1f}s"
    )
    return tokens


def _port(url: str) -> int | None:
    from urllib.parse import urlsplit

    return urlsplit(url).port


def presence_state(env: BenchEnv) -> dict:
    """Presence and Channels group keys left in Redis (all should be gone when nobody is
    connected)."""
    client = env.redis()
    conns = sum(1 for _ in client.scan_iter(match="clarion:rt:conns:*", count=2000))
    group_keys = 0
    group_members = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match="clarion:asgi:group:*", count=2000):
        group_keys += 1
        pipe.zcard(key)
    if group_keys:
        group_members = sum(pipe.execute())
    return {
        "online_set": client.scard("clarion:rt:online"),
        "conns_keys": conns,
        "group_keys": group_keys,
        "group_members": group_members,
    }


def log_problems(path) -> dict:
    """Counts of error signatures in a server or worker log."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    patterns = {
        "Traceback": "Traceback (most recent call last)",
        "Too many connections": "Too many connections",
        "MaxConnectionsError": "MaxConnectionsError",
        "TimeoutError": "TimeoutError",
        "Exception in ASGI application": "Exception in ASGI application",
        "group sends failed": "group sends failed",
        "realtime push failed": "realtime push failed",
        "ERROR": " ERROR ",
        "Application instance took too long": "took too long",
    }
    return {name: text.count(needle) for name, needle in patterns.items() if text.count(needle)}


# --------------------------------------------------------------------------- #
# realtime_latency
# --------------------------------------------------------------------------- #


async def _send_events(
    base: str, bearer: str, recipient: str, *, rate: float, seconds: float, label: str
) -> list[dict]:
    """Open-loop sender: event i is POSTed at t0 + i/rate whatever the previous ones do."""
    import aiohttp

    url = f"{base}/api/v1/events"
    headers = {"Authorization": bearer, "Content-Type": "application/json"}
    results: list[dict] = []

    async def post(session, seq: int, scheduled: float) -> None:
        sent = time.time()
        body = {
            "type": TYPE_KEY,
            "recipients": [recipient],
            "actor": "bench",
            "data": {"seq": seq, "sent_at": sent, "round": label},
        }
        record = {"seq": seq, "sent": sent, "lag": sent - scheduled}
        try:
            async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                payload = await resp.read()
                record["status"] = resp.status
                record["rtt"] = time.time() - sent
                if resp.status == 202:
                    record["event_id"] = json.loads(payload)["id"]
        except Exception as exc:  # noqa: BLE001
            record["status"] = type(exc).__name__
        results.append(record)

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        n = int(rate * seconds)
        t0 = time.time() + 0.05
        tasks = []
        for seq in range(n):
            scheduled = t0 + seq / rate
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, seq, scheduled)))
        await asyncio.gather(*tasks)
    return sorted(results, key=lambda r: r["seq"])


def _event_times(env: BenchEnv, label: str) -> dict[int, tuple[float, float | None, str]]:
    """seq -> (accept tx start, fan-out tx start, status) from the event rows (now() = transaction
    start)."""
    tid = data.type_id(env, TYPE_KEY)
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT (data->>'seq')::int, extract(epoch from created_at)::float8,"
            " extract(epoch from finished_at)::float8, status FROM notifications_event"
            " WHERE type_id = %s AND data->>'round' = %s",
            (tid, label),
        ).fetchall()
    return {seq: (created, finished, status) for seq, created, finished, status in rows}


def _analyze(
    label: str, sends: list[dict], frames: list[dict], times: dict, sockets: list[int]
) -> dict:
    """Per (socket, event): first receipt, how it arrived (live / in a resume window / final
    resume / never)."""
    accepted = {s["seq"]: s for s in sends if s.get("status") == 202}
    first: dict[tuple[int, int], dict] = {}
    duplicates = 0
    for f in sorted((f for f in frames if f.get("round") == label), key=lambda x: x["t"]):
        key = (f["c"], f["seq"])
        if key in first:
            duplicates += 1
            continue
        first[key] = f
    live, via_resume, via_final, lost = [], [], [], []
    for c in sockets:
        for seq in accepted:
            f = first.get((c, seq))
            if f is None:
                lost.append((c, seq))
            elif f.get("final"):
                via_final.append((c, seq))
            elif f.get("rw"):
                via_resume.append((c, seq))
            else:
                live.append((c, seq))
    received = [k for k in first if k[1] in accepted and not first[k].get("final")]
    lat = latency_summary_ms([first[k]["t"] - accepted[k[1]]["sent"] for k in received])
    live_lat = latency_summary_ms([first[k]["t"] - accepted[k[1]]["sent"] for k in live])
    # Where the time goes (socket 0, live frames): POST start -> accept tx -> fan-out tx -> frame.
    stages = {"post_to_accept_tx": [], "accept_tx_to_fanout_tx": [], "fanout_tx_to_frame": []}
    for c, seq in live:
        if c != sockets[0] or seq not in times:
            continue
        created, finished, _ = times[seq]
        stages["post_to_accept_tx"].append(created - accepted[seq]["sent"])
        if finished is not None:
            stages["accept_tx_to_fanout_tx"].append(finished - created)
            stages["fanout_tx_to_frame"].append(first[(c, seq)]["t"] - finished)
    stages["post_rtt"] = [s["rtt"] for s in accepted.values() if "rtt" in s]
    stage_summary = {k: latency_summary_ms(v) for k, v in stages.items()}
    t_first = min((s["sent"] for s in sends), default=0.0)
    windows: dict[int, list[float]] = defaultdict(list)
    for k in received:
        windows[int((accepted[k[1]]["sent"] - t_first) // 10)].append(
            first[k]["t"] - accepted[k[1]]["sent"]
        )
    trend = {
        f"{w * 10}-{w * 10 + 10}s": {
            "p50": round(percentile(sorted(v), 50) * 1000, 2),
            "p95": round(percentile(sorted(v), 95) * 1000, 2),
            "n": len(v),
        }
        for w, v in sorted(windows.items())
    }
    lag = sorted(s["lag"] for s in sends)
    return {
        "sent": len(sends),
        "accepted": len(accepted),
        "send_status": dict(Counter(str(s.get("status")) for s in sends)),
        "send_duration_s": round(max(s["sent"] for s in sends) - t_first, 2) if sends else 0.0,
        "schedule_lag_ms": {
            "p50": round(percentile(lag, 50) * 1000, 3),
            "p99": round(percentile(lag, 99) * 1000, 3),
            "max": round(lag[-1] * 1000, 3),
        }
        if lag
        else {},
        "expected_frames": len(accepted) * len(sockets),
        "latency_ms": lat,
        "latency_ms_live_only": live_lat,
        "stages_ms": stage_summary,
        "trend_10s_ms": trend,
        "frames_live": len(live),
        "frames_via_resume": len(via_resume),
        "frames_via_final_resume": len(via_final),
        "frames_lost": len(lost),
        "lost_examples": lost[:20],
        "duplicates_seen": duplicates,
        "frames_lost_event_not_fanned_out": sum(
            1 for _, seq in lost if times.get(seq, (0, 0, "?"))[2] != "done"
        ),
        "events_not_done": dict(Counter(st for (_, _, st) in times.values() if st != "done")),
    }


def _drain(env: BenchEnv, label: str, timeout: float) -> dict:
    """After the sends: wait until every event of the round is fanned out (the Celery backlog
    drained)."""
    tid = data.type_id(env, TYPE_KEY)
    t0 = time.monotonic()
    with env.connect() as conn:
        while True:
            left = conn.execute(
                "SELECT count(*) FROM notifications_event"
                " WHERE type_id = %s AND data->>'round' = %s"
                " AND status <> 'done'",
                (tid, label),
            ).fetchone()[0]
            if left == 0 or time.monotonic() - t0 > timeout:
                return {"seconds": round(time.monotonic() - t0, 2), "not_done": left}
            time.sleep(0.2)


def _profile_phase(env: BenchEnv, web, bulk, run_phase) -> dict:
    """--profile: py-spy one web worker and one bulk worker pool process during an extra
    (not measured) passive phase at the same rate."""
    from bench import profiling

    targets = {"web": web.workers(), "worker_bulk": bulk.workers()}
    recorders = {}
    for name, procs in targets.items():
        if procs:
            out = env.log_dir / f"py-spy-realtime-{name}-{procs[0].pid}.txt"
            recorders[name] = (profiling.start_record(procs[0].pid, 10, out), out)
    profiled = ", ".join(f"{n} pid {p[0].pid}" for n, p in targets.items() if p)
    say(f"profiling {profiled} with py-spy (extra phase)")
    time.sleep(0.5)
    run_phase()
    result = {}
    for name, (recorder, out) in recorders.items():
        profiling.finish_record(recorder, 30)
        result[name] = profiling.summarize(out)
        top = result[name].get("inclusive_pct", [])[:12]
        say(f"py-spy {name} (inclusive %): " + "; ".join(f"{pct}% {fn}" for fn, pct in top))
    return result


def run_latency(env: BenchEnv, opts) -> dict:
    seconds = 15 if opts.quick else 60
    light_seconds = 5 if opts.quick else 10
    rate = LATENCY_RATE
    light_rate = 10
    quiet = wait_quiet("realtime_latency")
    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()  # bench Redis db only
    checkpoint(env)
    activity = db_activity(env)

    urgent = start_worker(env, "worker_urgent")
    bulk = start_worker(env, "worker_bulk")
    web, base = start_web(env, command=opts.web_command)
    bearer = api_key(env, "bench-realtime")
    ensure_type(base, bearer)
    token = tokens_via_api(base, bearer, [LATENCY_RECIPIENT])[0]
    sockets = list(range(LATENCY_SOCKETS))
    pg_pid = listener_pid(_port(env.database_url) or 5432)
    redis_pid = listener_pid(_port(env.redis_url) or 6379)

    def connect(label: str, resume: bool) -> tuple[ClientGroup, dict]:
        group = ClientGroup(
            env,
            label=label,
            mode="latency",
            base=base,
            tokens=[token] * LATENCY_SOCKETS,
            processes=1,
            in_flight=LATENCY_SOCKETS,
            extra_spec={"resume": resume},
        )
        group.ready()
        result = group.connect(60)
        if result["ok"] != LATENCY_SOCKETS:
            raise RuntimeError(f"websocket clients: {result}")
        behaviour = "bell-like: resume on a gap" if resume else "passive: no resume until the end"
        say(
            f"{result['ok']} sockets of {LATENCY_RECIPIENT} connected ({behaviour};"
            f" {result['extensions']})"
        )
        return group, result

    def phase(clients: ClientGroup, label: str, phase_rate: float, phase_seconds: float) -> dict:
        wait_quiet(f"realtime_latency {label} phase", max_wait=180)
        meter = CpuMeter(
            {
                "web": [web.pid],
                "workers": [urgent.pid, bulk.pid],
                "postgres": [pg_pid] if pg_pid else [],
                "redis": [redis_pid] if redis_pid else [],
                "ws_clients": clients.pids(),
                "bench (sender)": [os.getpid()],
            }
        )
        say(
            f"{label}: {phase_rate:g} events/s for {phase_seconds:g}s to {LATENCY_RECIPIENT}"
            " (POST /api/v1/events, open loop)"
        )
        meter.start()
        sys0 = psutil.cpu_times()
        sends = asyncio.run(
            _send_events(
                base, bearer, LATENCY_RECIPIENT, rate=phase_rate, seconds=phase_seconds, label=label
            )
        )
        cpu = meter.stop()
        sys1 = psutil.cpu_times()
        idle = (sys1.idle + getattr(sys1, "iowait", 0)) - (sys0.idle + getattr(sys0, "iowait", 0))
        cpu["system_busy"] = round(psutil.cpu_count() - idle / cpu["_wall_s"], 3)
        cpu["other_processes"] = round(
            cpu["system_busy"]
            - sum(v for k, v in cpu.items() if not k.startswith("_") and k != "system_busy"),
            3,
        )
        backlog = _drain(env, label, 0)["not_done"]
        drain = _drain(env, label, 180)
        expected = sum(1 for s in sends if s.get("status") == 202) * LATENCY_SOCKETS
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if clients.count("f", lambda f: f.get("round") == label) >= expected:
                break
            time.sleep(0.2)
        say(
            f"{label}: {expected // LATENCY_SOCKETS:,}/{len(sends):,} events accepted;"
            f" fan-out backlog at the end of sending {backlog:,} events,"
            f" drained in {drain['seconds']}s ({drain['not_done']} left);"
            f" {clients.count('f', lambda f: f.get('round') == label):,}/{expected:,} frames so far"
        )
        return {"sends": sends, "cpu": cpu, "backlog_at_end": backlog, "drain": drain}

    def finish(clients: ClientGroup) -> dict:
        clients.signal()  # final resume on every socket, then close
        final = clients.wait("final_resume", 1, 90, what="final resume")
        closed = clients.wait("closed", 1, 60, what="close")
        clients.stop()
        return {"final_resume": final, "closed": closed}

    # Bell-like sockets: warm-up, light load, then the 100/s run.
    clients, connected = connect("latency", resume=True)
    phase(clients, "warm", 20, 2)
    light_run = phase(clients, "light", light_rate, light_seconds)
    main_run = phase(clients, "run", rate, seconds)
    main_end = finish(clients)
    frames = clients.snapshot("f")
    resumes = clients.snapshot("resume")
    light = _analyze("light", light_run["sends"], frames, _event_times(env, "light"), sockets)
    main = _analyze("run", main_run["sends"], frames, _event_times(env, "run"), sockets)
    # Passive sockets (no resume while running): the pipeline without client-driven resumes.
    data.delete_events_of_type(env, TYPE_KEY)
    passive_clients, _ = connect("latency-passive", resume=False)
    passive_run = phase(passive_clients, "passive", rate, seconds)
    profile = (
        _profile_phase(env, web, bulk, lambda: phase(passive_clients, "profiled", rate, 10))
        if getattr(opts, "profile", False)
        else None
    )
    passive_end = finish(passive_clients)
    passive_frames = passive_clients.snapshot("f")
    passive = _analyze(
        "passive", passive_run["sends"], passive_frames, _event_times(env, "passive"), sockets
    )
    frames_path = env.log_dir / "realtime_latency-frames.jsonl"
    with frames_path.open("w") as handle:  # every frame and resume request, for diagnosis
        for record in sorted(frames + resumes + passive_frames, key=lambda x: x["t"]):
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    problems = {
        "web": log_problems(web.log_path),
        "worker_urgent": log_problems(urgent.log_path),
        "worker_bulk": log_problems(bulk.log_path),
    }
    for managed in (web, bulk, urgent):
        REGISTRY.stop(managed)
    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()

    for label, res in (("light", light), ("run", main), ("passive", passive)):
        lat = res["latency_ms"]
        say(
            f"{label}: POST->frame p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms,"
            f" p99 {lat.get('p99')} ms, max {lat.get('max')} ms; live {res['frames_live']:,},"
            f" via resume {res['frames_via_resume']:,},"
            f" via final resume {res['frames_via_final_resume']:,}, lost {res['frames_lost']:,},"
            f" duplicates {res['duplicates_seen']:,}"
        )
        say(
            f"{label}: stages p50 ms: "
            + ", ".join(f"{k} {v.get('p50')}" for k, v in res["stages_ms"].items())
        )
    lat, st = main["latency_ms"], main["stages_ms"]
    plat = passive["latency_ms"]
    metrics = [
        metric(f"events sent ({rate}/s for {seconds}s, open loop)", main["sent"], "ev"),
        metric(
            "events accepted (202)",
            main["accepted"],
            "ev",
            at_least=main["sent"],
            goal_text="= sent",
        ),
        metric("POST -> notification frame p50", lat.get("p50"), "ms", below=GOAL_P50_MS),
        metric("POST -> notification frame p95", lat.get("p95"), "ms", below=GOAL_P95_MS),
        metric("POST -> notification frame p99", lat.get("p99"), "ms"),
        metric("POST -> notification frame max", lat.get("max"), "ms"),
        metric(
            f"frames expected ({LATENCY_SOCKETS} sockets x accepted)", main["expected_frames"], ""
        ),
        metric("frames received live (no resume)", main["frames_live"], ""),
        metric("frames that needed a resume (gap -> resume)", main["frames_via_resume"], ""),
        metric("frames recovered only by the final resume", main["frames_via_final_resume"], ""),
        metric("frames lost (never received)", main["frames_lost"], "", at_most=0),
        metric("resume requests sent", len(resumes), ""),
        metric("duplicate frames received (re-sent by resumes)", main["duplicates_seen"], ""),
        metric("fan-out backlog when sending ended", main_run["backlog_at_end"], "ev"),
        metric(
            "stage p50: accept tx -> fan-out tx start (queue)",
            st["accept_tx_to_fanout_tx"].get("p50"),
            "ms",
        ),
        metric(
            "stage p50: fan-out tx start -> frame (page+push)",
            st["fanout_tx_to_frame"].get("p50"),
            "ms",
        ),
        metric("POST /events round trip p50", st["post_rtt"].get("p50"), "ms"),
        metric(
            "CPU cores: web / workers / other processes",
            f"{main_run['cpu']['web']} / {main_run['cpu']['workers']}"
            f" / {main_run['cpu']['other_processes']}",
            "",
        ),
        metric(
            f"light load ({light_rate}/s): POST -> frame p50",
            light["latency_ms"].get("p50"),
            "ms",
            below=GOAL_P50_MS,
        ),
        metric(
            f"light load ({light_rate}/s): POST -> frame p95",
            light["latency_ms"].get("p95"),
            "ms",
            below=GOAL_P95_MS,
        ),
        metric(
            f"light load ({light_rate}/s): frames needing resume / lost",
            f"{light['frames_via_resume']} / {light['frames_lost']}",
            "",
        ),
        metric(
            f"passive sockets ({rate}/s): POST -> frame p50",
            plat.get("p50"),
            "ms",
            below=GOAL_P50_MS,
        ),
        metric(
            f"passive sockets ({rate}/s): POST -> frame p95",
            plat.get("p95"),
            "ms",
            below=GOAL_P95_MS,
        ),
        metric(
            "passive sockets: frames only via the final resume / lost",
            f"{passive['frames_via_final_resume']} / {passive['frames_lost']}",
            "",
        ),
        metric(
            "passive sockets: fan-out backlog when sending ended",
            passive_run["backlog_at_end"],
            "ev",
        ),
    ]
    return {
        "metrics": metrics,
        "details": {
            "rate_per_s": rate,
            "seconds": seconds,
            "sockets": LATENCY_SOCKETS,
            "recipient": LATENCY_RECIPIENT,
            "main": {
                **main,
                "backlog_at_end": main_run["backlog_at_end"],
                "drain": main_run["drain"],
                "cpu_cores": main_run["cpu"],
                **main_end,
            },
            "light": {
                "rate_per_s": light_rate,
                "seconds": light_seconds,
                **light,
                "cpu_cores": light_run["cpu"],
            },
            "passive": {
                **passive,
                "backlog_at_end": passive_run["backlog_at_end"],
                "drain": passive_run["drain"],
                "cpu_cores": passive_run["cpu"],
                **passive_end,
            },
            "stage_notes": "accept/fan-out tx = created_at/finished_at of the event row"
            " (now() is the transaction start);"
            " fan-out tx -> frame covers the page insert, commit, presence lookup,"
            " channel-layer group_send and the web process's push",
            "resume_requests": len(resumes),
            "resume_examples": resumes[:20],
            "frames_file": str(frames_path),
            "profile": profile,
            "connected": {k: v for k, v in connected.items() if not k.startswith("t_")},
            "log_problems": problems,
            "web_command": web.argv,
            "worker_commands": {"worker_urgent": urgent.argv, "worker_bulk": bulk.argv},
            "quiet_check": quiet,
            "db_activity_start": activity,
            "loadavg": loadavg(),
        },
    }


# --------------------------------------------------------------------------- #
# realtime_fanout
# --------------------------------------------------------------------------- #


def run_fanout(env: BenchEnv, opts) -> dict:
    from bench import fanout

    n = FANOUT_SUBSCRIBERS
    rounds = 2 if opts.quick else 3
    quiet = wait_quiet("realtime_fanout")
    topic_id = fanout.ensure_topic(env, n)
    with env.connect() as conn:
        external_ids = [
            r[0]
            for r in conn.execute(
                "SELECT r.external_id FROM notifications_subscription s"
                " JOIN notifications_recipient r ON r.id = s.recipient_id"
                " WHERE s.topic_id = %s ORDER BY r.id",
                (topic_id,),
            ).fetchall()
        ]
    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()
    checkpoint(env)

    urgent = start_worker(env, "worker_urgent")
    bulk = start_worker(env, "worker_bulk")
    web, base = start_web(env, command=opts.web_command)
    bearer = api_key(env, "bench-realtime")
    ensure_type(base, bearer)
    tokens = tokens_via_api(base, bearer, external_ids)

    clients = ClientGroup(
        env,
        label="fanout",
        mode="fanout",
        base=base,
        tokens=tokens,
        processes=CLIENT_PROCESSES,
        in_flight=HANDSHAKES_IN_FLIGHT,
    )
    clients.ready()
    wait_quiet("realtime_fanout connect")
    say(
        f"connecting {n:,} websocket clients"
        f" ({CLIENT_PROCESSES} processes, {HANDSHAKES_IN_FLIGHT} handshakes in flight)"
    )
    sampler = RedisClientSampler(env)
    sampler.start()
    connected = clients.connect(300)
    say(
        f"connected {connected['ok']:,}/{n:,} in {connected['seconds_all']:.2f}s"
        f" (handshake p50 {connected['handshake_ms'].get('p50')} ms,"
        f" p99 {connected['handshake_ms'].get('p99')} ms);"
        f" failures {connected['failed']} {connected['errors'] or ''}"
    )
    sampler.mark("connected")
    presence_connected = presence_state(env)
    url = f"{base}/api/v1/events"

    results = []
    for r in range(1, rounds + 1):
        wait_quiet(f"realtime_fanout round {r}", max_wait=120)
        label = f"fanout-{r}"
        t_mark = time.monotonic() - sampler.t0
        sent = time.time()
        status, payload = http_json(
            "POST",
            url,
            token=bearer,
            body={
                "type": TYPE_KEY,
                "recipients": [{"topic": fanout.topic_key(n)}],
                "actor": "bench",
                "data": {"round": label, "sent_at": sent, "title": "Version 2.4 is out"},
            },
        )
        t_posted = time.time()
        deadline = time.monotonic() + 60
        while (
            clients.count("f", lambda f, lb=label: f.get("round") == lb) < connected["ok"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        time.sleep(1.0)  # stragglers and duplicates
        got = [f for f in clients.snapshot("f") if f.get("round") == label]
        per_client: dict[int, float] = {}
        for f in got:
            per_client[f["c"]] = min(per_client.get(f["c"], float("inf")), f["t"] - sent)
        lat = sorted(per_client.values())
        with env.connect() as conn:
            row = conn.execute(
                "SELECT extract(epoch from created_at)::float8,"
                " extract(epoch from finished_at)::float8, status,"
                " recipient_count FROM notifications_event WHERE id = %s",
                (payload["id"],),
            ).fetchone()
        created, finished, ev_status, count = row
        result = {
            "round": r,
            "event_id": payload["id"],
            "http_status": status,
            "post_rtt_ms": round((t_posted - sent) * 1000, 2),
            "clients_got_it": len(per_client),
            "frames": len(got),
            "first_ms": round(lat[0] * 1000, 2) if lat else None,
            "median_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
            "p95_ms": round(percentile(lat, 95) * 1000, 2) if lat else None,
            "last_ms": round(lat[-1] * 1000, 2) if lat else None,
            "accept_tx_ms": round((created - sent) * 1000, 2),
            "fanout_tx_start_ms": round((finished - sent) * 1000, 2) if finished else None,
            "event_status": ev_status,
            "recipient_count": count,
            "redis_clients_peak": sampler.peak(since=t_mark),
        }
        results.append(result)
        say(
            f"round {r}: {result['clients_got_it']:,}/{connected['ok']:,} clients got it;"
            f" first {result['first_ms']} ms,"
            f" median {result['median_ms']} ms, last {result['last_ms']} ms after the POST"
            f" (fan-out tx started at {result['fanout_tx_start_ms']} ms);"
            f" Redis clients peak {result['redis_clients_peak'].get('max')}"
        )
    closed = clients.close()
    clients.stop()
    sampler.stop()
    time.sleep(2.0)
    presence_after = presence_state(env)
    problems = {
        "web": log_problems(web.log_path),
        "worker_urgent": log_problems(urgent.log_path),
        "worker_bulk": log_problems(bulk.log_path),
    }
    for managed in (web, bulk, urgent):
        REGISTRY.stop(managed)
    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()

    def med(key: str):
        values = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    r1 = results[0]
    metrics = [
        metric(f"connect {n:,} websocket clients (all)", connected["seconds_all"], "s"),
        metric("handshake failures", connected["failed"], "", at_most=0),
        metric("handshake p99", connected["handshake_ms"].get("p99"), "ms"),
        metric("round 1 (cold): POST -> first client's frame", r1["first_ms"], "ms"),
        metric("round 1 (cold): POST -> median client's frame", r1["median_ms"], "ms"),
        metric("round 1 (cold): POST -> last client's frame", r1["last_ms"], "ms"),
        metric(
            "round 1: clients that got it",
            r1["clients_got_it"],
            "",
            at_least=connected["ok"],
            goal_text=f"= {connected['ok']:,}",
        ),
        metric(f"median of {rounds} rounds: POST -> first frame", med("first_ms"), "ms"),
        metric(f"median of {rounds} rounds: POST -> median frame", med("median_ms"), "ms"),
        metric(f"median of {rounds} rounds: POST -> last frame", med("last_ms"), "ms"),
        metric(
            f"median of {rounds} rounds: POST -> fan-out tx start", med("fanout_tx_start_ms"), "ms"
        ),
        metric(
            "min clients that got it over rounds",
            min(r["clients_got_it"] for r in results),
            "",
            at_least=connected["ok"],
            goal_text=f"= {connected['ok']:,}",
        ),
        metric(
            "peak Redis connections (bench db) during a round",
            max((r["redis_clients_peak"].get("max") or 0) for r in results),
            "",
        ),
    ]
    return {
        "metrics": metrics,
        "details": {
            "subscribers": n,
            "client_processes": CLIENT_PROCESSES,
            "handshakes_in_flight": HANDSHAKES_IN_FLIGHT,
            "connected": {k: v for k, v in connected.items() if not k.startswith("t_")},
            "rounds": results,
            "closed": closed,
            "presence_connected": presence_connected,
            "presence_after_close": presence_after,
            "redis_clients_series": sampler.series(),
            "redis_marks": sampler.marks,
            "redis_peak_connect": sampler.peak(
                until=next((t for t, m in sampler.marks if m == "connected"), 1e9)
            ),
            "log_problems": problems,
            "web_command": web.argv,
            "worker_commands": {"worker_urgent": urgent.argv, "worker_bulk": bulk.argv},
            "quiet_check": quiet,
            "loadavg": loadavg(),
        },
    }
