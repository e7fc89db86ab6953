"""Scenario `ingest_ratelimit`: what per-API-key rate limiting costs the intake.

One web server (the Procfile's web line), two API keys: one without a rate
limit (`CLARION_API_RATE_LIMIT` forced empty, so the limiter is not asked)
and one limited far above the offered load (1,000,000/s, so none is refused).
`POST /api/v1/events` at concurrency 32 without a pause, switching key every
SLOT_SECONDS in pairs (off, on), (on, off), … so that the load of the rest of
a shared machine, which swings within seconds, falls on both sides of each
pair. A request counts in the slot it was sent in. Result: the median of the
per-pair ratios on/off with their spread, the ratio of the totals, and the
web processes' CPU time per accepted event in each mode, plus the limiter's
Redis round trips (the `clarion:ratelimit` calls counted by Redis).

No Celery workers run: the web process gets more of the CPU, so the limiter's
share of each request, and so the measured cost, is at its largest.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import threading
import time
import urllib.request

import psutil

from bench import data
from bench.common import loadavg, metric, say
from bench.env import BenchEnv, checkpoint
from bench.ingest import SINGLE_CONCURRENCY, TYPE_KEY, _dumps, event_body
from bench.load import run_load
from bench.procs import REGISTRY, http_json, start_web

HIGH_LIMIT = "1000000/s"
GOAL_RATIO = 0.95
SLOT_SECONDS = 1.0
MODES = ("off", "on")
CLIENT_PROCESSES = 2


def _mode(slot: int) -> str:
    """off,on | on,off | off,on …: each mode comes first in half of the pairs."""
    pair, second = divmod(slot, 2)
    return MODES[(pair + second) % 2]


def _key(env: BenchEnv, name: str, *rate: str) -> str:
    return env.manage("create_api_key", name, *rate).strip().splitlines()[-1].strip()


def _client_proc(args: dict, queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    queue.put(asyncio.run(_client_main(**args)))


async def _client_main(
    *,
    url: str,
    tokens: dict,
    bodies: list[str],
    concurrency: int,
    start_at: float,
    slots: int,
    offset: int,
) -> dict:
    import aiohttp

    ok = [0] * slots
    bad = [0] * slots
    end = start_at + slots * SLOT_SECONDS
    payloads = [body.encode() for body in bodies]
    headers = {
        mode: {"Authorization": token, "Content-Type": "application/json"}
        for mode, token in tokens.items()
    }

    async def worker(index: int, session) -> None:
        i = (offset + index * 7919) % len(payloads)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while (now := time.time()) < end:
            slot = int((now - start_at) / SLOT_SECONDS)
            i = (i + 1) % len(payloads)
            try:
                request = session.post(url, headers=headers[_mode(slot)], data=payloads[i])
                async with request as resp:
                    await resp.read()
                    good = resp.status == 202
            except aiohttp.ClientError:
                good = False
            (ok if good else bad)[slot] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
    return {"ok": ok, "bad": bad}


def _web_cpu_seconds(root_pid: int) -> float:
    total = 0.0
    try:
        root = psutil.Process(root_pid)
        for proc in (root, *root.children(recursive=True)):
            times = proc.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def _sample_cpu(root_pid: int, start_at: float, slots: int, out: list[float]) -> None:
    """The web server's CPU seconds at every slot boundary (a thread of this process)."""
    for boundary in range(slots + 1):
        time.sleep(max(0.0, start_at + boundary * SLOT_SECONDS - time.time()))
        out.append(_web_cpu_seconds(root_pid))


def interleaved_load(base: str, web_pid: int, tokens: dict, bodies: list[str], slots: int) -> dict:
    """Both keys under one continuous load, alternating per slot: per-slot counts and web CPU."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding DB connections
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # the client processes start and connect meanwhile
    children = []
    for index in range(CLIENT_PROCESSES):
        share, rest = divmod(SINGLE_CONCURRENCY, CLIENT_PROCESSES)
        share += 1 if index < rest else 0
        args = dict(
            url=f"{base}/api/v1/events",
            tokens=tokens,
            bodies=bodies,
            concurrency=share,
            start_at=start_at,
            slots=slots,
            offset=random.randrange(len(bodies)),
        )
        child = ctx.Process(target=_client_proc, args=(args, queue), daemon=True)
        child.start()
        children.append(child)
    cpu: list[float] = []
    sampler = threading.Thread(
        target=_sample_cpu, args=(web_pid, start_at, slots, cpu), daemon=True
    )
    sampler.start()
    try:
        parts = [queue.get(timeout=slots * SLOT_SECONDS + 120) for _ in children]
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
    sampler.join(10)
    return {
        "ok": [sum(part["ok"][slot] for part in parts) for slot in range(slots)],
        "bad": [sum(part["bad"][slot] for part in parts) for slot in range(slots)],
        "web_cpu_s": [after - before for before, after in zip(cpu, cpu[1:])],
    }


def _script_calls(env: BenchEnv) -> int:
    """EVALSHA + EVAL calls Redis has served (all clients: read around the load only)."""
    stats = env.redis().info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def run(env: BenchEnv, opts) -> dict:
    slots = 24 if opts.quick else 120

    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()
    checkpoint(env)
    web, base = start_web(env, command=opts.web_command, extra_env={"CLARION_API_RATE_LIMIT": ""})
    tokens = {
        "off": f"Bearer {_key(env, 'bench-ratelimit-off')}",
        "on": f"Bearer {_key(env, 'bench-ratelimit-on', '--rate-limit', HIGH_LIMIT)}",
    }
    status, _ = http_json(
        "PUT",
        f"{base}/api/v1/notification-types/{TYPE_KEY}",
        token=tokens["off"],
        body={"channels": ["in_app"], "category": "bench"},
    )
    say(f"notification type {TYPE_KEY} ready (HTTP {status}); limited key: {HIGH_LIMIT}")
    rng = random.Random(42)
    bodies = [_dumps(event_body(rng, i)) for i in range(2000)]

    for mode in MODES:  # warm-up: URLconf, key caches, DB and Redis connections in every worker
        run_load(
            base_url=base,
            generator="aiohttp",
            label=f"warm-up {mode}",
            method="POST",
            path="/api/v1/events",
            variants=[(tokens[mode], body) for body in bodies],
            concurrency=SINGLE_CONCURRENCY,
            duration=1 if opts.quick else 3,
            expected_status=202,
        )
    data.purge_queues(env)
    say(
        f"load: POST /api/v1/events c={SINGLE_CONCURRENCY}, key switched every {SLOT_SECONDS:g}s,"
        f" {slots} slots ({slots // 2} pairs)"
    )
    calls_before = _script_calls(env)
    result = interleaved_load(base, web.pid, tokens, bodies, slots)
    result["script_calls"] = _script_calls(env) - calls_before
    buckets = [key.decode() for key in env.redis().scan_iter(match="clarion:ratelimit:*")]
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    limiter_metrics = [line for line in lines if "clarion_rate_limit" in line]

    data.purge_queues(env)  # no workers: drop the publishes
    REGISTRY.stop(web)
    env.redis().flushdb()
    data.delete_events_of_type(env, TYPE_KEY)
    data.vacuum(env, "notifications_event")
    return _report(result, slots, buckets, limiter_metrics, web.argv)


def _report(
    result: dict, slots: int, buckets: list[str], limiter_metrics: list[str], web_argv
) -> dict:
    ok, cpu = result["ok"], result["web_cpu_s"]
    pairs = []
    for first in range(0, slots - 1, 2):
        by_mode = {_mode(slot): ok[slot] for slot in (first, first + 1)}
        if by_mode["off"]:
            pairs.append(by_mode["on"] / by_mode["off"])
    total = {mode: sum(ok[slot] for slot in range(slots) if _mode(slot) == mode) for mode in MODES}
    cpu_s = {
        mode: sum(cpu[slot] for slot in range(len(cpu)) if _mode(slot) == mode) for mode in MODES
    }
    cpu_us = {mode: cpu_s[mode] / max(total[mode], 1) * 1e6 for mode in MODES}
    median_ratio = statistics.median(pairs)
    quartiles = statistics.quantiles(pairs, n=4)
    rate = {mode: total[mode] / (slots / 2 * SLOT_SECONDS) for mode in MODES}
    calls_per_event = result["script_calls"] / max(total["on"], 1)
    say(
        f"events/s off {rate['off']:,.0f}, on {rate['on']:,.0f}; pairs on/off:"
        f" median {median_ratio:.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f},"
        f" range {min(pairs):.3f}-{max(pairs):.3f}; totals on/off {total['on'] / total['off']:.3f}"
    )
    say(
        f"web CPU per accepted event: off {cpu_us['off']:.0f} µs, on {cpu_us['on']:.0f} µs;"
        f" Redis script calls {result['script_calls']:,} ({calls_per_event:.4f} per limited event)"
    )
    failed = sum(result["bad"])
    return {
        "metrics": [
            metric("events/s, rate limit off", round(rate["off"], 1), "ev/s"),
            metric("events/s, rate limit on", round(rate["on"], 1), "ev/s"),
            metric(
                "ratio on/off (median of pairs)", round(median_ratio, 3), "x", at_least=GOAL_RATIO
            ),
            metric("ratio on/off, pairs' quartiles", f"{quartiles[0]:.3f}-{quartiles[2]:.3f}"),
            metric("ratio on/off, pairs' range", f"{min(pairs):.3f}-{max(pairs):.3f}"),
            metric("ratio on/off of the totals", round(total["on"] / total["off"], 3), "x"),
            metric("web CPU per event, off", round(cpu_us["off"], 1), "µs"),
            metric("web CPU per event, on", round(cpu_us["on"], 1), "µs"),
            metric(
                "Redis script calls (server-wide) per limited event", round(calls_per_event, 5), ""
            ),
            metric("errors (429 included)", failed, "", at_most=0),
        ],
        "details": {
            "web_command": web_argv,
            "high_limit": HIGH_LIMIT,
            "concurrency": SINGLE_CONCURRENCY,
            "slot_seconds": SLOT_SECONDS,
            "slot_modes": [_mode(slot) for slot in range(slots)],
            "accepted_per_slot": ok,
            "failed_per_slot": result["bad"],
            "web_cpu_s_per_slot": [round(c, 4) for c in cpu],
            "pair_ratios": [round(r, 4) for r in pairs],
            "script_calls": result["script_calls"],
            "buckets_in_redis": buckets,
            "limiter_metrics": limiter_metrics,
            "loadavg_after": loadavg(),
        },
    }
