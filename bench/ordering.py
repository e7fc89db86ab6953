"""Scenario `ordering`: does one recipient see sequential events in acceptance order?

The stack as `make run` lays it out (the Procfile's web line, worker_urgent and
worker_bulk with their Procfile concurrency) on the bench database and Redis db.
One recipient with one websocket (a `bench.wsclients` process, passive: it
never resumes while events arrive). 1,000 events (`--quick`: 300) of an
in_app type are POSTed one after another at 100 events/s: event n is sent at
t0 + n/100 s, or as soon as event n-1's 202 came back if that is later, each
on a new connection (so both web processes take requests), with its sequence
number in `data`. Acceptance order is then 0, 1, 2, ...

Three views are compared with it once every event is fanned out:

* live: the notification frames the socket received, in receipt order;
* resume: a new socket sending `{"type": "resume", "after": "0"}`, the frames
  up to `resumed`;
* inbox: `GET /api/v1/inbox` (status=all, limit 100) over every page (keyset
  cursor), read oldest first.

Per view: inversions (pairs out of acceptance order), adjacent swaps, lost and
duplicate items, and breaks of the `previous_id` chain. Side figures: POST ->
live frame p50/p95, and from the database whether event ids (uuid7) and
notification ids follow acceptance order. The whole measurement runs 3 times,
each with a fresh recipient; the table shows median (min-max) of each figure.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import psutil
from psycopg.rows import dict_row

from bench import data
from bench.common import Metric, fmt, latency_summary_ms, loadavg, percentile, say, warn
from bench.env import BenchEnv, checkpoint
from bench.order_stats import inversions, spread, view_figures
from bench.procs import (
    REGISTRY,
    CpuMeter,
    Managed,
    http_json,
    listener_pid,
    start_web,
    start_worker,
)
from bench.realtime import ClientGroup, api_key, log_problems, tokens_via_api, wait_quiet

TYPE_KEY = "bench.ordering"
RATE = 100.0
EVENTS = 1000
QUICK_EVENTS = 300
RUNS = 3
VIEWS = ("live", "resume", "inbox")
INBOX_PAGE = 100  # the API's maximum
DRAIN_TIMEOUT = 180.0


def _ensure_type(base: str, bearer: str) -> None:
    status, _ = http_json(
        "PUT",
        f"{base}/api/v1/notification-types/{TYPE_KEY}",
        token=bearer,
        body={
            "channels": ["in_app"],
            "category": "bench",
            "templates": {"in_app": {"en": {"title": "Event {{ seq }}"}}},
        },
    )
    say(f"notification type {TYPE_KEY} ready (HTTP {status}, channels in_app)")


# --------------------------------------------------------------------------- #
# sending
# --------------------------------------------------------------------------- #


def _post_event(base: str, bearer: str, body: dict) -> tuple[int | str, dict | None]:
    """One POST on a new connection (a producer without a session does this);
    the accepting web process is whichever accepts the connection."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/api/v1/events",
            body=json.dumps(body),
            headers={"Authorization": bearer, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        payload = response.read()
        return response.status, (json.loads(payload) if response.status == 202 else None)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return type(exc).__name__, None
    finally:
        conn.close()


def _send_sequentially(
    base: str, bearer: str, recipient: str, label: str, events: int
) -> list[dict]:
    """Event n at t0 + n/RATE, never before event n-1's answer (paced open loop, one at a time)."""
    sends = []
    t0 = time.time() + 0.05
    for seq in range(events):
        scheduled = t0 + seq / RATE
        delay = scheduled - time.time()
        if delay > 0:
            time.sleep(delay)
        sent = time.time()
        status, payload = _post_event(
            base,
            bearer,
            {
                "type": TYPE_KEY,
                "recipients": [recipient],
                "actor": "bench",
                "data": {"seq": seq, "round": label, "sent_at": sent},
            },
        )
        record = {
            "seq": seq,
            "sent": sent,
            "lag": sent - scheduled,
            "status": status,
            "rtt": time.time() - sent,
        }
        if payload:
            record["event_id"] = payload.get("id")
        sends.append(record)
    return sends


def _not_done(env: BenchEnv, label: str) -> int:
    tid = data.type_id(env, TYPE_KEY)
    with env.connect() as conn:
        return conn.execute(
            "SELECT count(*) FROM notifications_event WHERE type_id = %s AND data->>'round' = %s"
            " AND status <> 'done'",
            (tid, label),
        ).fetchone()[0]


def _drain(env: BenchEnv, label: str) -> dict:
    """Wait until every event of the run is fanned out."""
    t0 = time.monotonic()
    while True:
        left = _not_done(env, label)
        if left == 0 or time.monotonic() - t0 > DRAIN_TIMEOUT:
            return {"seconds": round(time.monotonic() - t0, 2), "not_done": left}
        time.sleep(0.2)


# --------------------------------------------------------------------------- #
# the three views
# --------------------------------------------------------------------------- #


async def _resume_from_start(base: str, token: str) -> list[dict]:
    """Frames of a resume from the beginning on a new socket, up to `resumed`."""
    from tests.wsclient import InboxSocket

    socket = await InboxSocket.open(base.replace("http://", "ws://"), token, origin=base)
    frames = []
    try:
        await socket.expect("unread_count")
        await socket.send({"type": "resume", "after": "0"})
        while True:
            frame = await socket.frame(timeout=30)
            if frame["type"] == "notification":
                item = frame["notification"]
                frames.append(
                    {
                        "seq": (item.get("data") or {}).get("seq"),
                        "id": item["id"],
                        "prev": frame.get("previous_id"),
                    }
                )
            elif frame["type"] == "resumed":
                return frames
            elif frame["type"] == "error":
                raise RuntimeError(f"resume refused: {frame}")
    finally:
        await socket.close()


def _inbox_oldest_first(base: str, token: str) -> tuple[list[dict], int]:
    """Every inbox item over the keyset pages (newest first), returned oldest first."""
    items: list[dict] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": INBOX_PAGE, "status": "all", **({"cursor": cursor} if cursor else {})}
        _, page = http_json(
            "GET", f"{base}/api/v1/inbox?{urlencode(query)}", token=f"Recipient {token}"
        )
        pages += 1
        items.extend(
            {"seq": (item.get("data") or {}).get("seq"), "id": item["id"]}
            for item in page["results"]
        )
        cursor = page["next_cursor"]
        if not cursor:
            return items[::-1], pages


def _chain_breaks(frames: list[dict]) -> int:
    """Frames whose previous_id is not the id of the frame before them (the first: None)."""
    breaks = 0
    before = None
    for frame in frames:
        if frame.get("prev") != before:
            breaks += 1
        before = frame["id"]
    return breaks


def _db_rows(env: BenchEnv, label: str) -> dict[int, dict]:
    """seq -> the event and its notification, for diagnosing any inversion."""
    tid = data.type_id(env, TYPE_KEY)
    with env.connect() as conn, conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            "SELECT (e.data->>'seq')::int AS seq, e.id::text AS event_id, e.priority, e.status,"
            " extract(epoch FROM e.created_at)::float8 AS accepted_at,"
            " extract(epoch FROM e.page_started_at)::float8 AS page_started_at,"
            " extract(epoch FROM e.finished_at)::float8 AS finished_at,"
            " n.id AS notification_id"
            " FROM notifications_event e"
            " LEFT JOIN notifications_notification n ON n.event_id = e.id"
            " WHERE e.type_id = %s AND e.data->>'round' = %s",
            (tid, label),
        ).fetchall()
    return {row["seq"]: row for row in rows}


def _rank_inversions(values: list) -> int:
    """Inversions of a list of comparable values (ids listed in acceptance order)."""
    rank = {value: index for index, value in enumerate(sorted(values))}
    return inversions([rank[value] for value in values])


def _diagnose(
    swaps: list[tuple[int, int]], db: dict[int, dict], sends: dict[int, dict]
) -> list[dict]:
    """For adjacent swaps (a came before b, a > b): what the database and the sender saw of both."""
    out = []
    for a, b in swaps[:10]:
        entry = {"pair": [a, b]}
        for seq in (a, b):
            row = db.get(seq, {})
            entry[str(seq)] = {
                **{
                    key: row.get(key)
                    for key in (
                        "event_id",
                        "notification_id",
                        "priority",
                        "accepted_at",
                        "page_started_at",
                        "finished_at",
                    )
                },
                "post_sent": sends.get(seq, {}).get("sent"),
            }
        out.append(entry)
    return out


# --------------------------------------------------------------------------- #
# one run
# --------------------------------------------------------------------------- #


@dataclass
class Stack:
    """The running web server and workers, and how to reach them."""

    base: str
    bearer: str
    web: Managed
    meter_groups: dict[str, list[int]]


def _web_worker_cpu(web: Managed) -> dict[int, float]:
    cpu = {}
    for proc in web.workers():
        try:
            times = proc.cpu_times()
            cpu[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    return cpu


def _system_busy(before, after, cpu: dict) -> dict:
    """Cores busy machine-wide during the sends, and how many of them were not the stack's
    (other people's work on a shared machine slows the fan-out down)."""
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    busy = psutil.cpu_count() - idle / cpu["_wall_s"]
    ours = sum(v for k, v in cpu.items() if not k.startswith("_"))
    return {"system_busy": round(busy, 3), "other_processes": round(busy - ours, 3)}


def _live_phase(env: BenchEnv, stack: Stack, number: int, events: int, label: str) -> dict:
    """One passive socket; the sequential sends; wait for the fan-out and the frames."""
    recipient = f"bench-order-{env.run_id}-{number}"
    token = tokens_via_api(stack.base, stack.bearer, [recipient])[0]
    clients = ClientGroup(
        env,
        label=f"ordering-{number}",
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
    quiet = wait_quiet(f"ordering run {number}", max_wait=120)
    say(f"run {number}: {events:,} events one after another at {RATE:g}/s to {recipient}")
    meter = CpuMeter(
        {**stack.meter_groups, "ws_client": clients.pids(), "bench (sender)": [os.getpid()]}
    )
    web_cpu0 = _web_worker_cpu(stack.web)
    meter.start()
    sys0 = psutil.cpu_times()
    sends = _send_sequentially(stack.base, stack.bearer, recipient, label, events)
    cpu = meter.stop()
    cpu.update(_system_busy(sys0, psutil.cpu_times(), cpu))
    web_cpu1 = _web_worker_cpu(stack.web)
    backlog = _not_done(env, label)
    drain = _drain(env, label)
    accepted = sum(1 for s in sends if s["status"] == 202)

    def live_frames(frame: dict) -> bool:
        return frame.get("round") == label and not frame.get("final")

    deadline = time.monotonic() + 10
    while clients.count("f", live_frames) < accepted and time.monotonic() < deadline:
        time.sleep(0.1)
    clients.signal()  # the client's final resume, then close
    clients.wait("final_resume", 1, 90, what="final resume")
    clients.wait("closed", 1, 60, what="close")
    clients.stop()
    return {
        "recipient": recipient,
        "token": token,
        "sends": sends,
        "quiet": quiet,
        "frames": [f for f in clients.snapshot("f") if f.get("round") == label],
        "cpu": cpu,
        "backlog": backlog,
        "drain": drain,
        "web_worker_cpu_s": {
            str(pid): round(used - web_cpu0.get(pid, 0.0), 2) for pid, used in web_cpu1.items()
        },
    }


def _rate(times: list[float]) -> float | None:
    """Items per second from the first to the last of these times."""
    return round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 1 else None


def _send_figures(sends: list[dict]) -> dict:
    accepted = [s for s in sends if s["status"] == 202]
    lags = sorted(s["lag"] for s in sends)
    statuses = Counter(str(s["status"]) for s in sends)
    return {
        "sent": len(sends),
        "accepted": len(accepted),
        "send_status": dict(statuses),
        "send_rate": _rate([s["sent"] for s in accepted]),
        "behind_schedule": sum(1 for lag in lags if lag > 1 / RATE),
        "schedule_lag_ms_max": round(lags[-1] * 1000, 2) if lags else None,
        "post_rtt_ms": latency_summary_ms([s["rtt"] for s in accepted]),
    }


def _live_figures(live: list[dict], db: dict[int, dict], sends: dict[int, dict]) -> dict:
    """POST -> frame latency, where its time went, and the pace frames came at."""
    firsts = {}
    for frame in live:
        if frame["seq"] in sends:
            firsts.setdefault(frame["seq"], frame)
    gaps = sorted(b["t"] - a["t"] for a, b in zip(live, live[1:]))
    return {
        "post_to_frame_ms": latency_summary_ms(
            [f["t"] - sends[seq]["sent"] for seq, f in firsts.items()]
        ),
        "stages_ms": _stages(firsts, db, sends),
        # While a backlog lasts, frames leave one lane hold apart (services/lanes.py).
        "live_frame_rate": _rate([f["t"] for f in live]),
        "live_frame_gap_ms": {
            "p50": round(percentile(gaps, 50) * 1000, 2),
            "p90": round(percentile(gaps, 90) * 1000, 2),
        }
        if gaps
        else {},
    }


def _stages(firsts: dict[int, dict], db: dict[int, dict], sends: dict[int, dict]) -> dict:
    """Where a live frame's time went: POST -> accept tx, accept tx -> fan-out started
    (queue and lane wait), fan-out started -> frame (page, commit, push). Events written
    by another event's lane hold (its sweep of earlier ones) have no start of their own."""
    stages: dict[str, list[float]] = {
        "post_to_accept_tx": [],
        "accept_to_fanout_start": [],
        "fanout_start_to_frame": [],
    }
    for seq, frame in firsts.items():
        row = db.get(seq)
        if row is None or row["page_started_at"] is None:
            continue
        stages["post_to_accept_tx"].append(row["accepted_at"] - sends[seq]["sent"])
        stages["accept_to_fanout_start"].append(row["page_started_at"] - row["accepted_at"])
        stages["fanout_start_to_frame"].append(frame["t"] - row["page_started_at"])
    return {name: latency_summary_ms(values) for name, values in stages.items()}


def _db_figures(db: dict[int, dict], accepted: list[int]) -> dict:
    """Do the event ids (uuid7) and notification ids follow acceptance order?"""
    rows = [db[seq] for seq in accepted if seq in db]
    notification_ids = [
        row["notification_id"] for row in rows if row["notification_id"] is not None
    ]
    return {
        "event_id_inversions": _rank_inversions([row["event_id"] for row in rows]),
        "notification_id_inversions": _rank_inversions(notification_ids),
        "notifications_in_db": len(notification_ids),
        "priorities": sorted({row["priority"] for row in rows}),
    }


def _one_run(env: BenchEnv, stack: Stack, number: int, events: int) -> dict:
    label = f"order-{env.run_id}-{number}"
    phase = _live_phase(env, stack, number, events, label)
    live = [f for f in phase["frames"] if not f.get("final")]
    resumed = asyncio.run(_resume_from_start(stack.base, phase["token"]))
    inbox, pages = _inbox_oldest_first(stack.base, phase["token"])
    db = _db_rows(env, label)

    sends = {s["seq"]: s for s in phase["sends"]}
    accepted = [s["seq"] for s in phase["sends"] if s["status"] == 202]
    figures = {}
    for name, items in (("live", live), ("resume", resumed), ("inbox", inbox)):
        fig = view_figures([item["seq"] for item in items], accepted)
        if name != "inbox":
            fig["previous_id_breaks"] = _chain_breaks(items)
        fig["swap_diagnosis"] = _diagnose(fig["swap_examples"], db, sends)
        figures[name] = fig
    result = {
        "run": number,
        "recipient": phase["recipient"],
        "label": label,
        **_send_figures(phase["sends"]),
        **_live_figures(live, db, sends),
        "views": figures,
        "inbox_pages": pages,
        "final_resume_frames": len(phase["frames"]) - len(live),
        **_db_figures(db, accepted),
        "backlog_at_end": phase["backlog"],
        "drain": phase["drain"],
        "cpu_cores": phase["cpu"],
        "web_worker_cpu_s": phase["web_worker_cpu_s"],
        "quiet_check": phase["quiet"],
    }
    _say_run(result)
    return {"result": result, "frames": phase["frames"], "resumed": resumed, "inbox": inbox}


def _say_run(result: dict) -> None:
    number, latency = result["run"], result["post_to_frame_ms"]
    views = "; ".join(
        f"{name}: {fig['items']:,} items, {fig['inversions']} inversions,"
        f" {fig['adjacent_swaps']} swaps, {fig['lost']} lost, {fig['duplicates']} dup"
        for name, fig in result["views"].items()
    )
    say(
        f"run {number}: accepted {result['accepted']:,}/{result['sent']:,}"
        f" at {result['send_rate']}/s;"
        f" {views}; POST->frame p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms"
    )
    for name, fig in result["views"].items():
        if fig["inversions"]:
            warn(f"run {number} {name}: out of order pairs, e.g. {fig['swap_examples'][:5]}")


# --------------------------------------------------------------------------- #
# the scenario
# --------------------------------------------------------------------------- #


def _figure(name: str, values: list, unit: str = "", *, zero: bool = False) -> Metric:
    """A table row: median (min-max) over the runs; with `zero`, ok only when every run had 0."""
    s = spread(values)
    if s["median"] is None:
        text = None
    elif s["min"] == s["max"]:
        text = fmt(s["median"])
    else:
        text = f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"
    ok = None
    if zero:
        ok = None not in values and s["max"] == 0
    return Metric(name, text, unit, "0 in every run" if zero else None, ok)


def _per_run(results: list[dict], *path: str) -> list:
    """One figure of every run (None where a run lacks it)."""
    values = []
    for result in results:
        value = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value)
    return values


def _metrics(results: list[dict], events: int) -> list[Metric]:
    def row(name: str, *path: str, unit: str = "", zero: bool = False) -> Metric:
        return _figure(name, _per_run(results, *path), unit, zero=zero)

    metrics = [
        Metric("runs (figures: median (min-max) over runs)", len(results)),
        row(f"events accepted per run ({events:,} sent one after another)", "accepted", unit="ev"),
        row("send rate achieved", "send_rate", unit="ev/s"),
        row("POSTs sent behind schedule (a 202 took > 10 ms)", "behind_schedule"),
    ]
    titles = {"live": "live frames", "resume": "resume from 0", "inbox": "inbox (REST, all pages)"}
    for view in VIEWS:
        checked = view != "live"  # live frames may be missed (the socket is a hint); order may not
        metrics += [
            row(f"{titles[view]}: inversions", "views", view, "inversions", zero=True),
            row(f"{titles[view]}: adjacent swaps", "views", view, "adjacent_swaps", zero=True),
            row(f"{titles[view]}: lost", "views", view, "lost", zero=checked),
            row(f"{titles[view]}: duplicates", "views", view, "duplicates", zero=checked),
        ]
    return metrics + [
        row(
            "resume from 0: previous_id chain breaks",
            "views",
            "resume",
            "previous_id_breaks",
            zero=True,
        ),
        row("live frames: previous_id chain breaks", "views", "live", "previous_id_breaks"),
        row("POST -> live frame p50", "post_to_frame_ms", "p50", unit="ms"),
        row("POST -> live frame p95", "post_to_frame_ms", "p95", unit="ms"),
        row("POST /events round trip p50", "post_rtt_ms", "p50", unit="ms"),
        row("event ids (uuid7) out of acceptance order: inversions", "event_id_inversions"),
        row("notification ids out of acceptance order: inversions", "notification_id_inversions"),
        row(
            "stage p50: accept tx -> fan-out start (queue, lane)",
            "stages_ms",
            "accept_to_fanout_start",
            "p50",
            unit="ms",
        ),
        row(
            "stage p50: fan-out start -> frame (page, push)",
            "stages_ms",
            "fanout_start_to_frame",
            "p50",
            unit="ms",
        ),
        row("fan-out backlog when sending ended", "backlog_at_end", unit="ev"),
        row("live frames delivered per second (first to last)", "live_frame_rate", unit="/s"),
        row("gap between consecutive live frames p50", "live_frame_gap_ms", "p50", unit="ms"),
        row(
            "CPU cores busy during sends (whole machine)", "cpu_cores", "system_busy", unit="cores"
        ),
        row(
            "CPU cores busy during sends: not the stack",
            "cpu_cores",
            "other_processes",
            unit="cores",
        ),
    ]


def _summary(results: list[dict]) -> dict:
    figures = {
        f"{view}.{key}": ("views", view, key)
        for view in VIEWS
        for key in ("inversions", "adjacent_swaps", "lost", "duplicates")
    }
    figures.update(
        {
            "post_to_frame_p50_ms": ("post_to_frame_ms", "p50"),
            "post_to_frame_p95_ms": ("post_to_frame_ms", "p95"),
            "event_id_inversions": ("event_id_inversions",),
            "notification_id_inversions": ("notification_id_inversions",),
            "live_frame_rate": ("live_frame_rate",),
        }
    )
    return {name: spread(_per_run(results, *path)) for name, path in figures.items()}


def _write_items(path, runs: list[dict]) -> None:
    """Every frame and inbox item of every run, for diagnosis."""
    with path.open("w") as handle:
        for r in runs:
            for view in ("frames", "resumed", "inbox"):
                for item in r[view]:
                    record = {"run": r["result"]["run"], "view": view, **item}
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")


def run(env: BenchEnv, opts) -> dict:
    events = QUICK_EVENTS if opts.quick else EVENTS
    quiet = wait_quiet("ordering", max_wait=300)
    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()  # bench Redis db only
    checkpoint(env)

    urgent = start_worker(env, "worker_urgent")
    bulk = start_worker(env, "worker_bulk")
    web, base = start_web(env, command=opts.web_command)
    bearer = api_key(env, "bench-ordering")
    _ensure_type(base, bearer)
    pg_pid = listener_pid(urlsplit(env.database_url).port or 5432)
    redis_pid = listener_pid(urlsplit(env.redis_url).port or 6379)
    stack = Stack(
        base=base,
        bearer=bearer,
        web=web,
        meter_groups={
            "web": [web.pid],
            "workers": [urgent.pid, bulk.pid],
            "postgres": [pg_pid] if pg_pid else [],
            "redis": [redis_pid] if redis_pid else [],
        },
    )

    runs = [_one_run(env, stack, number, events) for number in range(1, RUNS + 1)]
    results = [r["result"] for r in runs]
    items_path = env.log_dir / "ordering-items.jsonl"
    _write_items(items_path, runs)
    problems = {
        "web": log_problems(web.log_path),
        "worker_urgent": log_problems(urgent.log_path),
        "worker_bulk": log_problems(bulk.log_path),
    }
    for managed in (web, bulk, urgent):
        REGISTRY.stop(managed)
    data.delete_events_of_type(env, TYPE_KEY)
    env.redis().flushdb()
    return {
        "metrics": _metrics(results, events),
        "details": {
            "events_per_run": events,
            "rate_per_s": RATE,
            "runs": results,
            "summary": _summary(results),
            "items_file": str(items_path),
            "log_problems": problems,
            "web_command": web.argv,
            "worker_commands": {"worker_urgent": urgent.argv, "worker_bulk": bulk.argv},
            "quiet_check": quiet,
            "loadavg": loadavg(),
        },
    }
