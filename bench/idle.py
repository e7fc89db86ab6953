"""Scenario `idle_connections`: idle inbox websockets held by ONE server process.

For each server / websocket implementation (one process each, no Celery):

* uvicorn as the Procfile's web line with `--workers 1` and `--ws` set to
  `websockets-sansio`, `websockets` (legacy) or `wsproto`, per-message deflate
  off; the sansio one again with deflate on (more variants with deflate on:
  see VARIANTS);
* daphne (`daphne -b 127.0.0.1 -p PORT config.asgi:application`),

the bench (ulimit -n raised to the hard limit) opens 10,000 (`--quick`: 2,000)
authenticated `/ws/inbox/?token=...` connections from 4 client processes, 200
handshakes in flight, Origin = the server's http origin, and counts a socket as
connected when its first frame (`unread_count`) arrives. The clients offer
permessage-deflate, as browsers do. Measured:

* time to accept all, handshake failures (by error), handshake p50/p99;
* server RSS before (after a warm-up of 50 connections) and with all
  connected -> KB per connection (goal < 40 KB); sockets the server drops while
  idle (hold of 20 s; `--quick` 8 s) and the server's CPU while idle;
* connections to the bench Redis db during the burst and during the mass
  disconnect (CLIENT LIST, by last command: channel layer `zadd`/`expire`/
  `zrem`/`bzpopmin`, presence `eval`) against the CHANNEL_LAYERS pool limit;
* a mass disconnect (every client closes all its sockets at once): does the
  server survive (healthz, a new socket), its RSS after, how long until the
  presence set is empty, what presence/group state is left behind, and error
  signatures in the server log (e.g. "Too many connections").

Variants: env CLARION_BENCH_IDLE_SERVERS, comma-separated keys of VARIANTS.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import time
import urllib.error
import urllib.request

import psutil

from bench.common import loadavg, metric, say, warn
from bench.env import BenchEnv, bin_path, django_setup
from bench.procs import REGISTRY, RssSampler, free_port, procfile_command
from bench.realtime import ClientGroup, RedisClientSampler, log_problems, presence_state, wait_quiet

KIB = 1024
MIB = 1024 * 1024
GOAL_KB_PER_CONN = 40.0
CLIENT_PROCESSES = 4
IN_FLIGHT = 200
RECIPIENT_PREFIX = "bench-ws-"


def _uvicorn(ws: str, deflate: bool):
    """The Procfile's web line with --workers 1, the given --ws and per-message deflate set
    explicitly."""

    def argv(port: int) -> list[str]:
        args = procfile_command(
            "web", {"HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1"}
        )
        args[args.index("--ws") + 1] = ws
        if "--ws-per-message-deflate" in args:
            i = args.index("--ws-per-message-deflate")
            del args[i : i + 2]
        return [*args, "--ws-per-message-deflate", "true" if deflate else "false"]

    return argv


def _daphne(port: int) -> list[str]:
    return [bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]


# Browsers (and these clients) offer permessage-deflate; the server decides.
# Daphne (autobahn) does not accept it.
VARIANTS = {
    "uvicorn-websockets-sansio": (
        "uvicorn --ws websockets-sansio, no deflate",
        _uvicorn("websockets-sansio", False),
    ),
    "uvicorn-websockets": (
        "uvicorn --ws websockets (legacy), no deflate",
        _uvicorn("websockets", False),
    ),
    "uvicorn-wsproto": ("uvicorn --ws wsproto, no deflate", _uvicorn("wsproto", False)),
    "daphne": ("daphne", _daphne),
    "uvicorn-websockets-sansio-deflate": (
        "uvicorn --ws websockets-sansio, per-message deflate",
        _uvicorn("websockets-sansio", True),
    ),
    "uvicorn-websockets-deflate": (
        "uvicorn --ws websockets (legacy), per-message deflate",
        _uvicorn("websockets", True),
    ),
    "uvicorn-wsproto-deflate": (
        "uvicorn --ws wsproto, per-message deflate",
        _uvicorn("wsproto", True),
    ),
}
DEFAULT_VARIANTS = [
    "uvicorn-websockets-sansio",
    "uvicorn-websockets",
    "uvicorn-wsproto",
    "daphne",
    "uvicorn-websockets-sansio-deflate",
]


def _missing_package(key: str) -> str | None:
    """The comparison servers are not dependencies of Clarion; skip the ones absent."""
    import importlib.util

    wanted = "daphne" if key == "daphne" else "wsproto" if "wsproto" in key else None
    return wanted if wanted and importlib.util.find_spec(wanted) is None else None


def _raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _healthz(base: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _start_server(env: BenchEnv, key: str, argv_for, timeout: float = 90.0):
    port = free_port()
    argv = argv_for(port)
    say(f"starting {key}: {' '.join(argv[1:])}")
    managed = REGISTRY.start(
        key, argv, env=env.child_env(), log_path=env.log_dir / f"idle-{key}-{port}.log"
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    ok = 0
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"{key} exited early:\n{managed.log_tail()}")
        ok = ok + 1 if _healthz(base, 2) else 0
        if ok >= 3:
            return managed, base
        time.sleep(0.2)
    raise RuntimeError(f"{key} not ready after {timeout:.0f}s:\n{managed.log_tail()}")


def _ensure_recipients(env: BenchEnv, n: int) -> list[int]:
    with env.connect() as conn:
        conn.execute(
            """
            INSERT INTO notifications_recipient
                (external_id, email, phone, locale, timezone, data, created_at, updated_at)
            SELECT %s || g, '', '', '', '', '{}', now(), now()
            FROM generate_series(1, %s::int) g
            ON CONFLICT (external_id) DO NOTHING
            """,
            (RECIPIENT_PREFIX, n),
        )
        rows = conn.execute(
            "SELECT r.id FROM generate_series(1, %s::int) g"
            " JOIN notifications_recipient r ON r.external_id = %s || g"
            " ORDER BY g",
            (n, RECIPIENT_PREFIX),
        ).fetchall()
    return [r[0] for r in rows]


def _tokens(recipient_ids: list[int]) -> list[str]:
    """Signed recipient tokens, issued in-process (the server shares the run's SECRET_KEY)."""
    django_setup()
    from notifications.services.tokens import recipient_token_issue

    return [
        recipient_token_issue(recipient_id=rid, ttl_seconds=7200).token for rid in recipient_ids
    ]


async def _one_socket(base: str, token: str) -> str:
    from websockets.asyncio.client import connect

    try:
        async with connect(
            f"{base.replace('http://', 'ws://')}/ws/inbox/?token={token}",
            origin=base,
            open_timeout=10,
        ) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return (
                "ok" if frame.get("type") == "unread_count" else f"first frame {frame.get('type')}"
            )
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:200]


def _rss(pid: int) -> int:
    return RssSampler(pid).sample()


def _rss_settled(pid: int, samples: int = 4, interval: float = 0.5) -> int:
    values = []
    for _ in range(samples):
        values.append(_rss(pid))
        time.sleep(interval)
    return int(statistics.median(values))


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in _tree(pid):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _layer_pool_settings() -> dict:
    """The channel layer's Redis pool as built from settings.CHANNEL_LAYERS (same code path as
    the server)."""
    django_setup()
    from channels_redis.utils import create_pool
    from django.conf import settings

    host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    pool = create_pool(host)
    kwargs = {
        k: v
        for k, v in pool.connection_kwargs.items()
        if k
        in (
            "socket_timeout",
            "socket_connect_timeout",
            "socket_keepalive",
            "health_check_interval",
            "retry_on_timeout",
            "db",
        )
    }
    return {"max_connections": pool.max_connections, "pool_class": type(pool).__name__, **kwargs}


def _measure(env: BenchEnv, key: str, label: str, argv_for, tokens: list[str], hold: float) -> dict:
    n = len(tokens)
    quiet = wait_quiet(f"idle_connections {key}")
    env.redis().flushdb()  # bench Redis db only: presence and groups of the previous variant
    server, base = _start_server(env, key, argv_for)
    result: dict = {
        "server": label,
        "command": server.argv,
        "connections_wanted": n,
        "quiet_check": quiet,
    }
    group = None
    sampler = RedisClientSampler(env)
    try:
        # Warm-up: imports, the DB connection, the Redis pools, consumer code paths.
        warm = ClientGroup(
            env,
            label=f"{key}-warm",
            mode="idle",
            base=base,
            tokens=tokens[:50],
            processes=1,
            in_flight=25,
        )
        warm.ready()
        warm_conn = warm.connect(60)
        warm.close(60)
        warm.stop()
        if warm_conn["ok"] != min(50, n):
            warn(f"{key}: warm-up connected {warm_conn['ok']}/50: {warm_conn['errors']}")
        time.sleep(2.0)
        rss_base = _rss_settled(server.pid)
        result["rss_base_mib"] = round(rss_base / MIB, 1)

        group = ClientGroup(
            env,
            label=key,
            mode="idle",
            base=base,
            tokens=tokens,
            processes=CLIENT_PROCESSES,
            in_flight=IN_FLIGHT,
            open_timeout=60,
        )
        group.ready()
        sampler.start()
        sampler.mark("burst")
        say(
            f"{key}: opening {n:,} idle sockets"
            f" ({CLIENT_PROCESSES} processes, {IN_FLIGHT} handshakes in flight)"
        )
        rss_series = RssSampler(server.pid, 0.5)
        rss_series.start()
        connected = group.connect(600)
        sampler.mark("connected")
        t_connected = time.monotonic() - sampler.t0
        result["connect"] = {k: v for k, v in connected.items() if not k.startswith("t_")}
        say(
            f"{key}: {connected['ok']:,}/{n:,} connected in {connected['seconds_all']:.1f}s"
            f" ({connected['ok'] / max(connected['seconds_all'], 1e-9):,.0f}/s),"
            f" failures {connected['failed']}"
            f" {connected['errors'] or ''}; extensions {connected['extensions']}"
        )
        time.sleep(3.0)
        rss_connected = _rss_settled(server.pid)
        result["rss_connected_mib"] = round(rss_connected / MIB, 1)
        result["kb_per_connection"] = round(
            (rss_connected - rss_base) / max(connected["ok"], 1) / KIB, 2
        )
        result["presence_connected"] = presence_state(env)
        result["server_alive_connected"] = server.alive()

        # Idle hold: does the server keep every socket, what does idling cost?
        cpu0 = _cpu_seconds(server.pid)
        t0 = time.monotonic()
        time.sleep(hold)
        result["idle_hold_s"] = hold
        result["idle_server_cpu_cores"] = round(
            (_cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0), 3
        )
        result["dropped_during_hold"] = group.count("dropped")
        rss_hold = _rss(server.pid)
        result["rss_after_hold_mib"] = round(rss_hold / MIB, 1)
        say(
            f"{key}: RSS {rss_base / MIB:.1f} -> {rss_connected / MIB:.1f} MiB ="
            f" {result['kb_per_connection']:.1f} KB/connection;"
            f" {result['dropped_during_hold']} dropped while idle;"
            f" idle CPU {result['idle_server_cpu_cores']} cores"
        )

        # Mass disconnect: every socket closes at once.
        sampler.mark("mass close")
        t_close = time.monotonic() - sampler.t0
        cpu_close0 = _cpu_seconds(server.pid)
        closed = group.close(180)
        result["close"] = closed
        client = env.redis()
        last, stable_since, t_start = None, time.monotonic(), time.monotonic()
        while time.monotonic() - t_start < 90:
            online = client.scard("clarion:rt:online")
            if online != last:
                last, stable_since = online, time.monotonic()
            if online == 0 or time.monotonic() - stable_since > 5:
                break
            time.sleep(0.25)
        result["presence_drain_s"] = round(stable_since - t_start, 2)
        result["server_cpu_s_after_close"] = round(_cpu_seconds(server.pid) - cpu_close0, 2)
        time.sleep(3.0)
        sampler.mark("after close")
        sampler.stop()
        rss_series.stop()
        result["survived"] = server.alive()
        result["healthz_after"] = _healthz(base) if server.alive() else False
        result["new_socket_after"] = (
            asyncio.run(_one_socket(base, tokens[0])) if server.alive() else "server dead"
        )
        result["rss_after_close_mib"] = round(_rss(server.pid) / MIB, 1) if server.alive() else None
        result["presence_after_close"] = presence_state(env)
        result["redis_peak_burst"] = sampler.peak(until=t_connected)
        result["redis_peak_close"] = sampler.peak(since=t_close)
        result["redis_series"] = sampler.series()
        result["redis_marks"] = sampler.marks
        step = max(1, len(rss_series.samples) // 200)
        result["rss_series_mib"] = [(t, round(r / MIB, 1)) for t, r in rss_series.samples[::step]]
        result["log_problems"] = log_problems(server.log_path)
        result["log"] = str(server.log_path)
        say(
            f"{key}: mass close of {closed['closed']:,} in {closed['seconds_all']:.2f}s;"
            f" survived {result['survived']},"
            f" healthz {result['healthz_after']}, new socket {result['new_socket_after']};"
            f" RSS after {result['rss_after_close_mib']} MiB;"
            f" left in Redis {result['presence_after_close']};"
            f" Redis peak burst {result['redis_peak_burst'].get('max')},"
            f" close {result['redis_peak_close'].get('max')};"
            f" log {result['log_problems'] or 'clean'}"
        )
    finally:
        if sampler.is_alive():
            sampler.stop()
        if group is not None:
            group.stop()
        t_stop = time.monotonic()
        REGISTRY.stop(server)
        result["stop_s"] = round(
            time.monotonic() - t_stop, 1
        )  # >= 15: SIGTERM did not stop it, killed
    return result


def run(env: BenchEnv, opts) -> dict:
    n = 2_000 if opts.quick else 10_000
    hold = 8.0 if opts.quick else 20.0
    keys = [
        k.strip()
        for k in os.environ.get("CLARION_BENCH_IDLE_SERVERS", ",".join(DEFAULT_VARIANTS)).split(",")
        if k.strip()
    ]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise ValueError(
            f"unknown CLARION_BENCH_IDLE_SERVERS {unknown}; choose from {list(VARIANTS)}"
        )
    nofile = _raise_nofile()
    say(
        f"open files limit {nofile[0]:,}; {n:,} connections per server; variants: {', '.join(keys)}"
    )
    if nofile[0] < n + 1000:
        warn(
            f"open files limit {nofile[0]:,} is below {n + 1000:,}:"
            " the server may run out of descriptors"
        )
    pool = _layer_pool_settings()
    recipient_ids = _ensure_recipients(env, n)
    tokens = _tokens(recipient_ids)
    say(
        f"{len(tokens):,} recipients {RECIPIENT_PREFIX}1..{n} with tokens;"
        f" channel layer pool {pool}"
    )

    results: dict[str, dict] = {}
    for key in keys:
        label, argv_for = VARIANTS[key]
        missing = _missing_package(key)
        if missing:
            say(
                f"{key}: skipped, {missing} is not installed"
                f" (comparison only: pip install {missing})"
            )
            results[key] = {"server": label, "skipped": f"pip install {missing}"}
            continue
        try:
            results[key] = _measure(env, key, label, argv_for, tokens, hold)
        except Exception as exc:  # noqa: BLE001 - record it, go on with the next server
            warn(f"{key}: {type(exc).__name__}: {exc}")
            results[key] = {"server": label, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    env.redis().flushdb()

    metrics = []
    for key, r in results.items():
        if r.get("skipped"):
            metrics.append(metric(f"{key}: not installed", r["skipped"], ""))
            continue
        if r.get("error"):
            metrics.append(
                metric(f"{key}: ERROR", r["error"].splitlines()[0][:60], "", goal_text="no error")
            )
            continue
        c = r["connect"]
        left = r["presence_after_close"]
        metrics += [
            metric(f"{key}: connected", c["ok"], "", at_least=n, goal_text=f"= {n:,}"),
            metric(f"{key}: time to accept all", c["seconds_all"], "s"),
            metric(f"{key}: handshake failures", c["failed"], "", at_most=0),
            metric(
                f"{key}: server RSS base -> all connected",
                f"{r['rss_base_mib']} -> {r['rss_connected_mib']}",
                "MiB",
            ),
            metric(
                f"{key}: memory per connection",
                r["kb_per_connection"],
                "KB",
                below=GOAL_KB_PER_CONN,
            ),
            metric(
                f"{key}: dropped while idle ({r['idle_hold_s']:.0f}s)",
                r["dropped_during_hold"],
                "",
                at_most=0,
            ),
            metric(
                f"{key}: peak Redis conns burst / mass close",
                f"{r['redis_peak_burst'].get('max')} / {r['redis_peak_close'].get('max')}",
                "",
                goal_text=f"<= {pool['max_connections']} (layer pool)",
            ),
            metric(
                f"{key}: survived mass close (healthz, new socket)",
                "yes"
                if r["survived"] and r["healthz_after"] and r["new_socket_after"] == "ok"
                else "NO",
                "",
                goal_text="yes",
            ),
            metric(f"{key}: RSS after mass close", r["rss_after_close_mib"], "MiB"),
            metric(
                f"{key}: stale after close (online/group members)",
                f"{left['online_set']} / {left['group_members']}",
                "",
                goal_text="0 / 0",
            ),
            metric(
                f"{key}: server log tracebacks",
                r["log_problems"].get("Traceback", 0),
                "",
                at_most=0,
            ),
        ]
        # status for the string-valued rows
        metrics[-4].ok = metrics[-4].value == "yes"
        metrics[-2].ok = metrics[-2].value == "0 / 0"
        peak = max(r["redis_peak_burst"].get("max") or 0, r["redis_peak_close"].get("max") or 0)
        metrics[-5].ok = peak <= pool["max_connections"]
    good = {k: r for k, r in results.items() if not r.get("error") and not r.get("skipped")}
    if good:
        best = min(good, key=lambda k: good[k]["kb_per_connection"])
        metrics.append(
            metric(
                "lowest memory per connection", f"{best} ({good[best]['kb_per_connection']} KB)", ""
            )
        )
        failing = [
            k
            for k, r in good.items()
            if r["connect"]["failed"] or r["dropped_during_hold"] or not r["survived"]
        ]
        metrics.append(
            metric(
                "variants with failures/drops/crash",
                ", ".join(failing) or "none",
                "",
                goal_text="none",
            )
        )
        metrics[-1].ok = not failing
    return {
        "metrics": metrics,
        "details": {
            "connections": n,
            "client_processes": CLIENT_PROCESSES,
            "handshakes_in_flight": IN_FLIGHT,
            "nofile": nofile,
            "channel_layer_pool": pool,
            "variants": results,
            "loadavg": loadavg(),
            "pyproject_note": "daphne and wsproto are not in pyproject.toml;"
            " uvicorn[standard] brings websockets (sansio and legacy) only",
        },
    }
