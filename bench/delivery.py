"""Scenarios `delivery_throughput` and `delivery_latency` (external channels).

delivery_throughput: sends per second of ONE send-worker process (the
Procfile's worker_bulk line with concurrency 1, consuming `normal`, the
queue the deliveries of a normal-priority event go to) against local sinks
started by the bench (`bench/sinks.py`): email over SMTP (aiosmtpd), the
webhook channel (aiohttp, Standard Webhooks signatures checked), SMS through
a Twilio-compatible API (aiohttp). Per run: N deliveries of one event to a
topic are fanned out in-process (no Celery), then, timed, the bench
dispatches them as Beat would (`deliveries_dispatch_due()` until nothing is
due, then every dispatch interval) and waits until none is `queued`;
rate = sent / (first dispatch -> last delivery settled). The sinks' counts
must match (nothing lost, nothing sent twice). Each channel runs in pairs
clean / failing (order alternating), the failing run with two providers in
failover order, the first answering every second call with a retryable
error (SMTP 451 at DATA, HTTP 503); the per-pair ratio failing/clean is the
cost of a failing provider. The circuit breakers stay as in production, so
the failing provider is mostly skipped once its breaker opens (the runs
record how many calls it still got).

delivery_latency: the real stack (web, worker_urgent, worker_bulk, beat as
the Procfile starts them), email to the SMTP sink, which notes when each
message arrives and its `X-Clarion-Delivery`. One event every 200 ms to one
recipient through `POST /api/v1/events` for 60 s (--quick 20 s); latency =
arrival at the sink - the POST's 202. Twice: with the dispatch sweep at its
configured interval (`CLARION_DELIVERY_DISPATCH_INTERVAL_SECONDS`, 2 s by
default) and at 0.2 s.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from unittest import mock
from urllib.parse import quote, urlsplit

import psutil

from bench import data
from bench.common import fmt, latency_summary_ms, loadavg, metric, say, warn
from bench.env import (
    BenchEnv,
    checkpoint,
    django_setup,
    meta_get,
    meta_put,
    vacuum_if_dirty,
)
from bench.procs import (
    REGISTRY,
    CpuMeter,
    Managed,
    free_port,
    http_json,
    listener_pid,
    procfile_command,
    start_web,
    start_worker,
)

RECIPIENT_PREFIX = "bench-dlv-"
PROFILE = {"on": False}
BUILD_CHUNK = 20_000
QUICK_SIZE = 5_000
GOAL_RATIO = 0.80
FROM = "bench@example.test"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "bench-twilio-token"
TWILIO_FROM = "+15550001111"
# A fixed Standard Webhooks secret, so the webhook sink can check every signature.
WEBHOOK_SECRET = "whsec_" + "YmVuY2gtd2ViaG9vay1zaWduaW5nLXNlY3JldC0zMmI="
MARK_HEADER = "X-Bench-Provider"
MARK_VALUE = "primary"
SETTLE_POLL_S = 0.25


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    goal: float  # sent/s of one worker process
    size: int  # deliveries of a full run (~60 s at the goal)


SPECS = {
    "email": ChannelSpec("email", 500.0, 30_000),
    "webhook": ChannelSpec("webhook", 1000.0, 60_000),
    "sms": ChannelSpec("sms", 1000.0, 60_000),
}

EMAIL = {
    "subject": "{{ actor }} commented on {{ post_title }}",
    "text": "Hi,\n\n{{ actor }} wrote: {{ comment }}\n"
    "{% for item in items %}- {{ item.title|truncate(40) }}\n{% endfor %}\nOpen: {{ url }}",
    "html": "<p>Hi,</p><p><b>{{ actor }}</b> wrote: {{ comment }}</p>"
    "<ul>{% for item in items %}<li>{{ item.title|truncate(40) }} ({{ item.count }})</li>"
    '{% endfor %}</ul><p><a href="{{ url }}">Open the post</a> ·'
    ' <a href="{{ url }}/settings">Settings</a></p>',
}
TEMPLATES = {
    "email": {"en": EMAIL},
    "sms": {"en": {"text": "{{ actor }} commented on {{ post_title }}: {{ url }}"}},
    "webhook": {
        "en": {
            "payload": '{"text": "{{ actor }} commented on {{ post_title }}",'
            ' "url": "{{ url }}", "event": "{{ event.id }}"}'
        }
    },
}
EVENT_DATA = {
    "post_title": "Release notes",
    "comment": "Looks great & works",
    "url": "https://example.com/p/1",
    "items": [{"title": f"Item number {i} with a longer title", "count": i} for i in range(3)],
}


def type_key(channel: str) -> str:
    return f"bench.delivery.{channel}"


def topic_key(n: int) -> str:
    return f"bench.delivery.{n}"


def primary_webhook_provider():
    """The failing run's first webhook provider (`CLARION_PROVIDERS=webhook=bench.delivery.
    primary_webhook_provider`): the real WebhookProvider with its own guarded,
    pooled client whose calls carry `X-Bench-Provider: primary`. The webhook
    channel has one destination (the recipient's URL) whatever the provider,
    so the sink tells the two providers apart by this header and fails only
    the first one's calls."""
    from delivery.providers.http import shared_client
    from delivery.providers.ssrf import GuardedTransport
    from delivery.providers.webhook import WebhookProvider

    class PrimaryWebhookProvider(WebhookProvider):
        def _send_one(self, message):
            if self._client is None or self._pid != os.getpid():
                self._pid = os.getpid()
                client = shared_client(name="bench-primary-webhook", transport=GuardedTransport())
                client.headers[MARK_HEADER] = MARK_VALUE
                self._client = client
            return super()._send_one(message)

    provider = PrimaryWebhookProvider()
    provider._pid = 0
    return provider


# --------------------------------------------------------------------------- #
# sinks and the send worker
# --------------------------------------------------------------------------- #


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Sink:
    kind: str  # smtp | twilio | webhook
    port: int
    stats_port: int
    managed: Managed
    fail_every: int

    def stats(self) -> dict:
        return _get_json(f"http://127.0.0.1:{self.stats_port}/_stats")

    def arrivals(self) -> list[list]:
        return _get_json(f"http://127.0.0.1:{self.stats_port}/_arrivals")

    def stop(self) -> None:
        REGISTRY.stop(self.managed, timeout=5.0)


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def start_sink(
    env: BenchEnv,
    kind: str,
    *,
    port: int | None = None,
    fail_every: int = 0,
    fail_header: str = "",
    record: bool = False,
    timeout: float = 20.0,
) -> Sink:
    """A sink subprocess (bench/sinks.py) on `port` (default: a free one); waits
    for its READY line. A port another process holds is a clear error."""
    port = port or free_port()
    argv = [sys.executable, "-m", "bench.sinks"]
    argv += ["smtp"] if kind == "smtp" else ["http", "--kind", kind]
    argv += ["--port", str(port)]
    if fail_every:
        argv += ["--fail-every", str(fail_every)]
    if fail_header:
        argv += ["--fail-header", fail_header]
    if kind == "webhook":
        argv += ["--secret", WEBHOOK_SECRET]
    if record:
        argv += ["--record"]
    log_path = env.log_dir / f"sink-{kind}-{port}-{int(time.time() * 1000)}.log"
    managed = REGISTRY.start(f"sink-{kind}-{port}", argv, env=env.child_env(), log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        for line in text.splitlines():
            if line.startswith("SINK READY "):
                ready = json.loads(line[len("SINK READY ") :])
                return Sink(kind, port, int(ready["stats_port"]), managed, fail_every)
            if line.startswith("SINK ERROR"):
                REGISTRY.stop(managed, timeout=2.0)
                raise RuntimeError(f"{kind} sink: {line[len('SINK ERROR: ') :]}")
        if not managed.alive():
            raise RuntimeError(f"{kind} sink exited early (port {port}):\n{managed.log_tail()}")
        time.sleep(0.05)
    REGISTRY.stop(managed, timeout=2.0)
    raise RuntimeError(f"{kind} sink not ready after {timeout:.0f}s:\n{managed.log_tail()}")


def provider_url(sink: Sink) -> str:
    """The CLARION_PROVIDERS value that reaches this sink."""
    if sink.kind == "smtp":
        return f"smtp://127.0.0.1:{sink.port}?from={quote(FROM)}"
    if sink.kind == "twilio":
        base = quote(f"http://127.0.0.1:{sink.port}", safe="")
        return (
            f"twilio://{TWILIO_SID}:{TWILIO_TOKEN}@127.0.0.1:{sink.port}"
            f"?from={quote(TWILIO_FROM)}&base_url={base}"
        )
    return "webhook://"


def sender_env(providers: list[tuple[str, str]], **extra: str) -> dict[str, str]:
    """Settings of the send worker (and of the whole stack in delivery_latency)."""
    return {
        "CLARION_PROVIDERS": ", ".join(f"{channel}={url}" for channel, url in providers),
        "CLARION_WEBHOOK_ALLOW_PRIVATE": "1",  # the sinks are on loopback
        "CLARION_WEBHOOK_SIGNING_SECRET": WEBHOOK_SECRET,
        # Production's path: links through click redirects, an open pixel.
        "CLARION_TRACK_OPENS": "true",
        "CLARION_TRACK_CLICKS": "true",
        **extra,
    }


def start_send_worker(env: BenchEnv, extra_env: dict[str, str], timeout: float = 90.0) -> Managed:
    """The Procfile's worker_bulk line (queues normal,low) with ONE pool process."""
    argv = procfile_command("worker_bulk", {"BULK_CONCURRENCY": "1"})
    log_path = env.log_dir / f"send-worker-{int(time.time() * 1000)}.log"
    managed = REGISTRY.start("send-worker", argv, env=env.child_env(**extra_env), log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path.exists() and b" ready." in log_path.read_bytes():
            return managed
        if not managed.alive():
            raise RuntimeError(f"send worker exited early:\n{managed.log_tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"send worker not ready after {timeout:.0f}s:\n{managed.log_tail()}")


# --------------------------------------------------------------------------- #
# data: recipients with every address, a topic per size, a type per channel
# --------------------------------------------------------------------------- #


def webhook_base(port: int) -> str:
    return f"http://127.0.0.1:{port}/hook/"


def ensure_recipients(env: BenchEnv, n: int, port: int) -> None:
    """Recipients bench-dlv-1..n with an email, a phone and `data.webhook_url`
    (on `port`), built set-based once; a changed port is one UPDATE."""
    base = webhook_base(port)
    with env.connect() as conn:
        conn.execute("SET synchronous_commit = off")
        have = conn.execute(
            "SELECT count(*) FROM notifications_recipient WHERE external_id LIKE %s",
            (RECIPIENT_PREFIX + "%",),
        ).fetchone()[0]
        if have < n:
            say(f"building {n - have:,} delivery recipients (email, phone, webhook_url)")
            for start in range(1, n + 1, BUILD_CHUNK):
                end = min(n, start + BUILD_CHUNK - 1)
                conn.execute(
                    """
                    INSERT INTO notifications_recipient
                        (external_id, email, phone, locale, timezone, data, created_at, updated_at)
                    SELECT %(p)s || g, 'dlv' || g || '@example.test',
                           '+1555' || lpad(g::text, 7, '0'), '', '',
                           jsonb_build_object('webhook_url', %(base)s || g), now(), now()
                    FROM generate_series(%(a)s::int, %(b)s::int) g
                    ON CONFLICT (external_id) DO NOTHING
                    """,
                    {"p": RECIPIENT_PREFIX, "base": base, "a": start, "b": end},
                )
        moved = conn.execute(
            "UPDATE notifications_recipient"
            " SET data = jsonb_build_object('webhook_url', %s || substr(external_id, %s))"
            " WHERE external_id LIKE %s AND coalesce(data->>'webhook_url', '') NOT LIKE %s",
            (base, len(RECIPIENT_PREFIX) + 1, RECIPIENT_PREFIX + "%", base + "%"),
        ).rowcount
        if moved:
            say(f"pointed {moved:,} recipients' webhook_url at {base}")
        if have < n or moved:
            conn.execute("ANALYZE notifications_recipient")
    vacuum_if_dirty(env, "notifications_recipient")


def ensure_topic(env: BenchEnv, n: int) -> None:
    key = topic_key(n)
    with env.connect() as conn:
        conn.execute(
            "INSERT INTO notifications_topic (key, created_at) VALUES (%s, now())"
            " ON CONFLICT (key) DO NOTHING",
            (key,),
        )
        topic_id = conn.execute(
            "SELECT id FROM notifications_topic WHERE key = %s", (key,)
        ).fetchone()[0]
        have = conn.execute(
            "SELECT count(*) FROM notifications_subscription WHERE topic_id = %s", (topic_id,)
        ).fetchone()[0]
        if have == n:
            return
        say(f"building topic {key} ({n:,} subscribers)")
        conn.execute("DELETE FROM notifications_subscription WHERE topic_id = %s", (topic_id,))
        conn.execute(
            """
            INSERT INTO notifications_subscription (topic_id, recipient_id, created_at)
            SELECT %s, r.id, now() FROM generate_series(1, %s::int) g
            JOIN notifications_recipient r ON r.external_id = %s || g
            """,
            (topic_id, n, RECIPIENT_PREFIX),
        )
        conn.execute("ANALYZE notifications_subscription")


def ensure_type(channel: str) -> None:
    from notifications.services import types

    types.notification_type_put(
        key=type_key(channel),
        body={
            "channels": [channel],
            "category": "bench",
            "templates": {channel: TEMPLATES[channel]},
        },
    )


def _api_key_id() -> int:
    from notifications.api.auth import api_key_create
    from notifications.models import ApiKey

    key = ApiKey.objects.filter(name="bench-delivery", revoked_at__isnull=True).first()
    return key.id if key else api_key_create(name="bench-delivery")[0].id


def fan_out(channel: str, n: int) -> tuple[str, float]:
    """One event to the n-subscriber topic, fanned out in-process page by page
    (its Celery publish patched out, so no worker runs it); (event id, seconds)."""
    from notifications.services import events
    from notifications.services.fanout import event_fan_out_page

    body = {
        "type": type_key(channel),
        "recipients": [{"topic": topic_key(n)}],
        "actor": "bench",
        "data": EVENT_DATA,
    }
    t0 = time.perf_counter()
    with mock.patch.object(events, "on_commit_fan_out", lambda items: None):
        event_id = events.event_accept(api_key_id=_api_key_id(), body=body).id
    page = 0
    while True:
        result = event_fan_out_page(event_id=event_id, page=page)
        if result.done or not result.ran:
            break
        page = result.next_page
    return str(event_id), time.perf_counter() - t0


def cleanup(env: BenchEnv, channels) -> None:
    for channel in channels:
        data.delete_events_of_type(env, type_key(channel))
    for table in (
        "notifications_deliveryattempt",
        "notifications_delivery",
        "notifications_notification",
        "notifications_event",
    ):
        vacuum_if_dirty(env, table)


# --------------------------------------------------------------------------- #
# delivery_throughput
# --------------------------------------------------------------------------- #


def _event_deliveries(env: BenchEnv, event_id: str) -> dict:
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT d.status, d.reason, count(*), min(d.id), max(d.id),"
            " extract(epoch FROM max(d.updated_at))"
            " FROM notifications_delivery d JOIN notifications_notification n"
            " ON n.id = d.notification_id WHERE n.event_id = %s GROUP BY 1, 2",
            (event_id,),
        ).fetchall()
        attempts = conn.execute(
            "SELECT a.provider, a.outcome, count(*) FROM notifications_deliveryattempt a"
            " JOIN notifications_delivery d ON d.id = a.delivery_id"
            " JOIN notifications_notification n ON n.id = d.notification_id"
            " WHERE n.event_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
            (event_id,),
        ).fetchall()
    by_status: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for status, reason, count, *_ in rows:
        by_status[status] = by_status.get(status, 0) + count
        if reason:
            reasons[f"{status}/{reason}"] = count
    by_provider: dict[str, dict[str, int]] = {}
    for provider, outcome, count in attempts:
        by_provider.setdefault(provider or "-", {})[outcome] = count
    return {
        "statuses": by_status,
        "reasons": reasons,
        "min_id": min((r[3] for r in rows), default=None),
        "last_settled_epoch": max((float(r[5]) for r in rows if r[5] is not None), default=None),
        "attempts": by_provider,
    }


def _queued(conn, channel: str, min_id: int) -> int:
    return conn.execute(
        "SELECT count(*) FROM notifications_delivery"
        " WHERE status = 'queued' AND channel = %s AND id >= %s",
        (channel, min_id),
    ).fetchone()[0]


def _machine_busy(before, after) -> float:
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    total = sum(after) - sum(before)
    return round(1.0 - idle / total, 3) if total > 0 else float("nan")


def _dispatch_until_settled(env: BenchEnv, channel: str, n: int, min_id: int, timeout: float):
    """Beat's part, in this process: dispatch until nothing is due, then every
    dispatch interval, until no delivery of the run is queued."""
    from django.conf import settings

    from delivery.services.dispatch import deliveries_dispatch_due

    interval = settings.CLARION["DELIVERY_DISPATCH_INTERVAL_SECONDS"]
    t0 = time.time()
    dispatched, dispatch_s, next_dispatch, told = 0, 0.0, 0.0, time.monotonic()
    with env.connect() as conn:
        while True:
            now = time.monotonic()
            if now >= next_dispatch:
                d0 = time.perf_counter()
                count = deliveries_dispatch_due()
                dispatch_s += time.perf_counter() - d0
                dispatched += count
                if count:
                    continue  # more may be due at once, as Beat's next sweep would find
                next_dispatch = now + interval
            queued = _queued(conn, channel, min_id)
            if queued == 0:
                return t0, dispatched, dispatch_s, False
            if time.time() - t0 > timeout:
                warn(f"{channel}: {queued:,} deliveries still queued after {timeout:.0f}s")
                return t0, dispatched, dispatch_s, True
            if time.monotonic() - told >= 10:
                told = time.monotonic()
                done = n - queued
                say(f"  {done:,}/{n:,} settled ({done / (time.time() - t0):,.0f}/s so far)")
            time.sleep(SETTLE_POLL_S)


def _start_profile(env: BenchEnv, worker: Managed, channel: str, mode: str, pair: int):
    """With --profile, py-spy the send worker through the first clean run of each channel."""
    if not PROFILE["on"] or mode != "clean" or pair != 1:
        return None
    from bench import profiling

    out = env.log_dir / f"profile-send-{channel}.raw"
    return out, profiling.start_record(worker.pid, 600, out, subprocesses=True)


def _finish_profile(profiler) -> dict | None:
    if profiler is None:
        return None
    from bench import profiling

    out, managed = profiler
    if managed is not None:
        import signal

        managed.popen.send_signal(signal.SIGINT)  # py-spy writes what it sampled on SIGINT only
        try:
            managed.popen.wait(20)
        except Exception:  # noqa: BLE001 - a profiler that hangs is stopped below
            pass
        REGISTRY.stop(managed, timeout=5)
    summary = profiling.summarize(out)
    for name, pct in summary.get("self_pct", [])[:20]:
        say(f"  profile self {pct:5.1f}%  {name}")
    return summary


def _one_run(
    env: BenchEnv, spec: ChannelSpec, mode: str, n: int, pair: int, webhook_port: int
) -> dict:
    from django.conf import settings

    channel = spec.name
    cleanup(env, [channel])
    env.redis().flushdb()  # bench Redis db only: breakers and queues start empty
    sinks: list[Sink] = []
    worker = None
    try:
        if channel == "webhook":
            failing = mode == "failing"
            sinks.append(
                start_sink(
                    env,
                    "webhook",
                    port=webhook_port,
                    fail_every=2 if failing else 0,
                    fail_header=f"{MARK_HEADER}:{MARK_VALUE}" if failing else "",
                )
            )
            providers = [("webhook", "webhook://")]
            if failing:
                providers.insert(0, ("webhook", "bench.delivery.primary_webhook_provider"))
        else:
            kind = "smtp" if channel == "email" else "twilio"
            if mode == "failing":
                sinks.append(start_sink(env, kind, fail_every=2))
            sinks.append(start_sink(env, kind))
            providers = [(channel, provider_url(s)) for s in sinks]
        say(f"{channel} {mode} #{pair}: fanning out {n:,} deliveries in-process")
        event_id, fan_out_s = fan_out(channel, n)
        before = _event_deliveries(env, event_id)
        queued = before["statuses"].get("queued", 0)
        if queued != n:
            raise RuntimeError(f"{channel}: fan-out made {queued:,} queued deliveries, not {n:,}")
        worker = start_send_worker(env, sender_env(providers))
        checkpoint(env)
        pg_pid = listener_pid(urlsplit(env.database_url).port or 5432)
        redis_pid = listener_pid(urlsplit(env.redis_url).port or 6379)
        meter = CpuMeter(
            {
                "worker": [worker.pid],
                "sinks": [s.managed.pid for s in sinks],
                "postgres": [pg_pid] if pg_pid else [],
                "redis": [redis_pid] if redis_pid else [],
                "bench": [os.getpid()],
            }
        )
        timeout = max(300.0, 15.0 * n / spec.goal)
        # Every delivery is claimed at once; the lease must outlast the run.
        lease = settings.CLARION["DELIVERY_LEASE_SECONDS"]
        settings.CLARION["DELIVERY_LEASE_SECONDS"] = max(lease, int(timeout) + 120)
        load0, cpu0 = loadavg(), psutil.cpu_times()
        profiler = _start_profile(env, worker, channel, mode, pair)
        meter.start()
        try:
            t0, dispatched, dispatch_s, timed_out = _dispatch_until_settled(
                env, channel, n, before["min_id"], timeout
            )
        finally:
            settings.CLARION["DELIVERY_LEASE_SECONDS"] = lease
        cpu = meter.stop()
        busy = _machine_busy(cpu0, psutil.cpu_times())
        profile = _finish_profile(profiler)
        after = _event_deliveries(env, event_id)
        sink_stats = [{"sink": f"{s.kind}:{s.port}", **s.stats()} for s in sinks]
    finally:
        if worker is not None:
            REGISTRY.stop(worker)
        for sink in sinks:
            sink.stop()
    sent = after["statuses"].get("sent", 0)
    end = after["last_settled_epoch"] or time.time()
    elapsed = max(end - t0, 1e-6)
    accepted = sum(s["accepted"] for s in sink_stats)
    result = {
        "channel": channel,
        "mode": mode,
        "pair": pair,
        "deliveries": n,
        "sent": sent,
        "not_sent": n - sent,
        "statuses": after["statuses"],
        "reasons": after["reasons"],
        "seconds": round(elapsed, 3),
        "sent_per_s": round(sent / elapsed, 1),
        "timed_out": timed_out,
        "dispatched": dispatched,
        "dispatch_seconds": round(dispatch_s, 3),
        "fan_out_seconds": round(fan_out_s, 2),
        "cpu_cores": cpu,
        "worker_cpu_ms_per_sent": round(1000 * cpu["worker"] * cpu["_wall_s"] / max(sent, 1), 3),
        "machine_cpu_busy": busy,
        "loadavg_start": load0,
        "loadavg_end": loadavg(),
        "sinks": sink_stats,
        "sinks_accepted": accepted,
        "lost_or_duplicated": abs(accepted - sent),
        "attempts": after["attempts"],
        "providers": [url.split("?")[0] for _, url in providers],
    }
    if profile is not None:
        result["profile"] = profile
    first = sink_stats[0]
    say(
        f"{channel} {mode} #{pair}: {sent:,}/{n:,} sent in {elapsed:.1f}s ="
        f" {result['sent_per_s']:,.0f}/s; worker {cpu['worker']:.2f} cores"
        f" ({result['worker_cpu_ms_per_sent']:.2f} ms/msg), postgres {cpu.get('postgres', 0):.2f},"
        f" sinks {cpu['sinks']:.2f}; machine busy {busy:.0%}, load {result['loadavg_end']};"
        f" sinks accepted {accepted:,}"
        + (
            f"; failing provider took {first['counted_for_failure']:,} calls,"
            f" refused {first['refused']:,}"
            if mode == "failing"
            else ""
        )
    )
    cleanup(env, [channel])
    return result


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return "1 run"
    return f"median of {len(values)}: {fmt(min(values))}-{fmt(max(values))}"


def _channel_metrics(spec: ChannelSpec, runs: list[dict]) -> tuple[list, dict]:
    clean = [r for r in runs if r["mode"] == "clean"]
    failing = [r for r in runs if r["mode"] == "failing"]
    by_pair = {(r["pair"], r["mode"]): r for r in runs}
    ratios = [
        by_pair[(p, "failing")]["sent_per_s"] / by_pair[(p, "clean")]["sent_per_s"]
        for p in sorted({r["pair"] for r in runs})
        if (p, "failing") in by_pair
        and (p, "clean") in by_pair
        and by_pair[(p, "clean")]["sent_per_s"] > 0
    ]
    ch = spec.name
    clean_rates = [r["sent_per_s"] for r in clean]
    failing_rates = [r["sent_per_s"] for r in failing]
    worker_cores = [r["cpu_cores"]["worker"] for r in clean]
    ms_per = [r["worker_cpu_ms_per_sent"] for r in clean]
    lost = sum(r["lost_or_duplicated"] for r in runs)
    not_sent = sum(r["not_sent"] for r in runs)
    n = runs[0]["deliveries"]
    metrics = [
        metric(
            f"{ch} ({n:,}) clean, sent/s, 1 worker process ({_spread(clean_rates)})",
            round(statistics.median(clean_rates), 1),
            "msg/s",
            at_least=spec.goal,
        ),
        metric(
            f"{ch} 1st of 2 providers failing half, sent/s ({_spread(failing_rates)})",
            round(statistics.median(failing_rates), 1),
            "msg/s",
        ),
        metric(
            f"{ch} ratio failing/clean per pair ({_spread([round(r, 3) for r in ratios])})",
            round(statistics.median(ratios), 3) if ratios else None,
            "x",
            at_least=GOAL_RATIO,
        ),
        metric(
            f"{ch} worker CPU, clean ({_spread(worker_cores)})",
            round(statistics.median(worker_cores), 2),
            "cores",
        ),
        metric(
            f"{ch} worker CPU per sent message, clean ({_spread(ms_per)})",
            round(statistics.median(ms_per), 3),
            "ms",
        ),
        metric(f"{ch} not sent (all runs)", not_sent, "", at_most=0),
        metric(f"{ch} sinks' accepted != sent (all runs)", lost, "", at_most=0),
    ]
    return metrics, {"pair_ratios": [round(r, 4) for r in ratios]}


def _pick_webhook_port(env: BenchEnv) -> int:
    """The webhook sink's port is in every recipient's data: reused while it is free."""
    previous = meta_get(env, "delivery_webhook_port")
    if previous and port_free(int(previous)):
        return int(previous)
    port = free_port()
    meta_put(env, "delivery_webhook_port", port)
    return port


def _channels_wanted() -> list[str]:
    raw = os.environ.get("CLARION_BENCH_DELIVERY_CHANNELS", "")
    wanted = [c.strip() for c in raw.split(",") if c.strip()] or list(SPECS)
    unknown = [c for c in wanted if c not in SPECS]
    if unknown:
        raise RuntimeError(
            f"CLARION_BENCH_DELIVERY_CHANNELS: unknown {unknown}; choose from {list(SPECS)}"
        )
    return wanted


def run_throughput(env: BenchEnv, opts) -> dict:
    PROFILE["on"] = bool(getattr(opts, "profile", False))
    django_setup()
    channels = _channels_wanted()
    pairs = opts.repeat or (1 if opts.quick else 3)
    sizes = {c: QUICK_SIZE if opts.quick else SPECS[c].size for c in channels}
    webhook_port = _pick_webhook_port(env)
    ensure_recipients(env, max(sizes.values()), webhook_port)
    for n in set(sizes.values()):
        ensure_topic(env, n)
    for channel in channels:
        ensure_type(channel)
    cleanup(env, channels)
    with env.connect() as conn:
        others = conn.execute(
            "SELECT count(*) FROM notifications_delivery WHERE status = 'queued'"
        ).fetchone()[0]
    if others:
        warn(
            f"{others:,} other queued deliveries in the bench database; the dispatch sends them too"
        )
    say(
        f"delivery_throughput: {', '.join(f'{c} {sizes[c]:,}' for c in channels)};"
        f" {pairs} clean/failing pair(s) per channel; load {loadavg()}"
    )
    runs: list[dict] = []
    metrics: list = []
    details: dict = {"sizes": sizes, "pairs": pairs, "webhook_port": webhook_port, "channels": {}}
    for channel in channels:
        spec = SPECS[channel]
        channel_runs = []
        for pair in range(1, pairs + 1):
            # Alternate the order inside pairs: a drift of the shared machine falls on both sides.
            order = ("clean", "failing") if pair % 2 else ("failing", "clean")
            for mode in order:
                channel_runs.append(_one_run(env, spec, mode, sizes[channel], pair, webhook_port))
        channel_metrics, extra = _channel_metrics(spec, channel_runs)
        metrics.extend(channel_metrics)
        details["channels"][channel] = extra
        runs.extend(channel_runs)
    details["runs"] = runs
    details["worker_command"] = procfile_command("worker_bulk", {"BULK_CONCURRENCY": "1"})
    details["env"] = {k: v for k, v in sender_env([]).items() if k != "CLARION_PROVIDERS"}
    return {"metrics": metrics, "details": details}


# --------------------------------------------------------------------------- #
# delivery_latency
# --------------------------------------------------------------------------- #

LATENCY_RECIPIENT = "bench-dlv-latency"
LATENCY_TYPE = "bench.delivery.latency"
LATENCY_PERIOD_S = 0.2
FAST_INTERVAL_S = 0.2


class Stack:
    """web, worker_urgent, worker_bulk and beat as the Procfile starts them, with `extra` env."""

    def __init__(self, env: BenchEnv, opts, extra: dict[str, str]) -> None:
        self.procs: list[Managed] = []
        self.procs.append(start_worker(env, "worker_urgent", extra_env=extra))
        self.procs.append(start_worker(env, "worker_bulk", extra_env=extra))
        beat = REGISTRY.start(
            "beat",
            procfile_command("beat", {}),
            env=env.child_env(**extra),
            log_path=env.log_dir / f"beat-{int(time.time() * 1000)}.log",
        )
        self.procs.append(beat)
        web, self.base = start_web(env, command=opts.web_command, extra_env=extra)
        self.procs.append(web)

    def stop(self) -> None:
        for managed in reversed(self.procs):
            REGISTRY.stop(managed)


def _bearer(env: BenchEnv) -> str:
    return "Bearer " + env.manage("create_api_key", "bench-delivery").strip().splitlines()[-1]


def _sync_interval(seconds: float) -> None:
    """Point Beat's dispatch schedule (a django-celery-beat row) at `seconds`."""
    from django.conf import settings

    from notifications.schedules import schedules_sync

    settings.CLARION["DELIVERY_DISPATCH_INTERVAL_SECONDS"] = seconds
    schedules_sync()


def _post_events(stack: Stack, bearer: str, *, seconds: float, label: str) -> list[dict]:
    """One event every LATENCY_PERIOD_S (open loop: event i is due at t0 + i * period)."""
    sends = []
    count = int(seconds / LATENCY_PERIOD_S)
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i * LATENCY_PERIOD_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = {
            "type": LATENCY_TYPE,
            "recipients": [LATENCY_RECIPIENT],
            "actor": "bench",
            "data": {**EVENT_DATA, "seq": i, "run": label},
        }
        started = time.time()
        try:
            status, answer = http_json(
                "POST", f"{stack.base}/api/v1/events", token=bearer, body=body
            )
        except (RuntimeError, OSError) as exc:
            sends.append({"seq": i, "started": started, "error": str(exc)[:200]})
            continue
        sends.append(
            {
                "seq": i,
                "started": started,
                "answered": time.time(),
                "status": status,
                "event_id": answer.get("id") if isinstance(answer, dict) else None,
            }
        )
    return sends


def _latency_rows(env: BenchEnv, event_ids: list[str]) -> dict[int, tuple[str, float, str]]:
    """delivery id -> (event id, delivery row created epoch, status)."""
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT d.id, n.event_id::text, extract(epoch FROM d.created_at), d.status"
            " FROM notifications_delivery d JOIN notifications_notification n"
            " ON n.id = d.notification_id WHERE n.event_id = ANY(%s::uuid[])"
            " AND d.channel = 'email'",
            (event_ids,),
        ).fetchall()
    return {r[0]: (r[1], float(r[2]), r[3]) for r in rows}


def _wait_settled(env: BenchEnv, event_ids: list[str], timeout: float) -> int:
    """Wait until every event has its email delivery and none is queued; the number left."""
    deadline = time.monotonic() + timeout
    left = len(event_ids)
    while time.monotonic() < deadline:
        rows = _latency_rows(env, event_ids)
        left = len(event_ids) - sum(1 for r in rows.values() if r[2] != "queued")
        if left == 0:
            return 0
        time.sleep(0.5)
    return left


def _latency_phase(env: BenchEnv, opts, interval: float, seconds: float) -> dict:
    sink = start_sink(env, "smtp", record=True)
    _sync_interval(interval)
    extra = sender_env(
        [("email", provider_url(sink))],
        CLARION_DELIVERY_DISPATCH_INTERVAL_SECONDS=f"{interval:g}",
    )
    say(f"latency phase: dispatch every {interval:g} s; starting the stack")
    stack = Stack(env, opts, extra)
    try:
        bearer = _bearer(env)
        http_json(
            "PUT",
            f"{stack.base}/api/v1/notification-types/{LATENCY_TYPE}",
            token=bearer,
            body={
                "channels": ["email"],
                "category": "bench",
                "templates": {"email": TEMPLATES["email"]},
            },
        )
        http_json(
            "PUT",
            f"{stack.base}/api/v1/recipients/{LATENCY_RECIPIENT}",
            token=bearer,
            body={"email": "latency@example.test"},
        )
        warm = _post_events(stack, bearer, seconds=1.0, label="warm-up")
        left = _wait_settled(env, [s["event_id"] for s in warm if s.get("event_id")], 30)
        if left:
            raise RuntimeError(f"warm-up: {left} emails not sent after 30s; see the logs")
        say(f"posting one event every {LATENCY_PERIOD_S * 1000:.0f} ms for {seconds:.0f}s")
        pg_pid = listener_pid(urlsplit(env.database_url).port or 5432)
        meter = CpuMeter(
            {
                **{m.name: [m.pid] for m in stack.procs},
                "postgres": [pg_pid] if pg_pid else [],
                "sink": [sink.managed.pid],
            }
        )
        cpu0, load0 = psutil.cpu_times(), loadavg()
        meter.start()
        sends = _post_events(stack, bearer, seconds=seconds, label=f"interval-{interval:g}")
        cores = meter.stop()
        busy = _machine_busy(cpu0, psutil.cpu_times())
        accepted = {s["event_id"]: s for s in sends if s.get("event_id")}
        left = _wait_settled(env, list(accepted), 30 + 3 * interval)
        rows = _latency_rows(env, list(accepted))
        arrivals: dict[int, list[float]] = {}
        for delivery_id, at in sink.arrivals():
            arrivals.setdefault(int(delivery_id), []).append(float(at))
    finally:
        stack.stop()
        sink.stop()
    from_answer, from_start, to_row, row_to_arrival = [], [], [], []
    by_event = {event_id: (d, created) for d, (event_id, created, _) in rows.items()}
    lost = 0
    for event_id, send in accepted.items():
        found = by_event.get(event_id)
        times = arrivals.get(found[0]) if found else None
        if not times:
            lost += 1
            continue
        first = min(times)
        from_answer.append(first - send["answered"])
        from_start.append(first - send["started"])
        to_row.append(found[1] - send["answered"])
        row_to_arrival.append(first - found[1])
    duplicates = sum(len(times) - 1 for d, times in arrivals.items() if d in rows)
    post = latency_summary_ms([s["answered"] - s["started"] for s in sends if "answered" in s])
    result = {
        "interval_s": interval,
        "events_posted": len(sends),
        "accepted": len(accepted),
        "post_errors": [s["error"] for s in sends if "error" in s][:10],
        "not_settled": left,
        "lost": lost,
        "duplicates": duplicates,
        "accept_to_received_ms": latency_summary_ms(from_answer),
        "post_start_to_received_ms": latency_summary_ms(from_start),
        "accept_to_delivery_row_ms": latency_summary_ms(to_row),
        "delivery_row_to_received_ms": latency_summary_ms(row_to_arrival),
        "post_ms": post,
        "cpu_cores": cores,
        "machine_cpu_busy": busy,
        "loadavg_start": load0,
        "loadavg_end": loadavg(),
    }
    lat = result["accept_to_received_ms"]
    say(
        f"dispatch every {interval:g} s: accept -> received p50 {lat.get('p50', float('nan')):.0f}"
        f" ms, p95 {lat.get('p95', float('nan')):.0f} ms, p99 {lat.get('p99', float('nan')):.0f}"
        f" ms over {lat.get('count', 0)} emails; lost {lost}, duplicates {duplicates};"
        f" machine busy {busy:.0%}"
    )
    return result


def run_latency(env: BenchEnv, opts) -> dict:
    django_setup()
    from django.conf import settings

    configured = float(settings.CLARION["DELIVERY_DISPATCH_INTERVAL_SECONDS"])
    seconds = 20.0 if opts.quick else 60.0
    data.delete_events_of_type(env, LATENCY_TYPE)
    phases = []
    try:
        for interval in (configured, FAST_INTERVAL_S):
            phases.append(_latency_phase(env, opts, interval, seconds))
    finally:
        _sync_interval(configured)
    data.delete_events_of_type(env, LATENCY_TYPE)
    metrics = []
    for phase in phases:
        label = f"dispatch every {phase['interval_s']:g} s"
        lat = phase["accept_to_received_ms"]
        metrics += [
            metric(f"email accept -> SMTP received p50 ({label})", lat.get("p50"), "ms"),
            metric(f"email accept -> SMTP received p95 ({label})", lat.get("p95"), "ms"),
            metric(f"email accept -> SMTP received p99 ({label})", lat.get("p99"), "ms"),
            metric(
                f"  of which accept -> delivery row (fan-out) p95 ({label})",
                phase["accept_to_delivery_row_ms"].get("p95"),
                "ms",
            ),
            metric(
                f"  of which delivery row -> received (dispatch wait + send) p50 ({label})",
                phase["delivery_row_to_received_ms"].get("p50"),
                "ms",
            ),
            metric(
                f"beat + worker_urgent CPU (they run the sweeps) ({label})",
                round(
                    phase["cpu_cores"].get("beat", 0) + phase["cpu_cores"].get("worker_urgent", 0),
                    3,
                ),
                "cores",
            ),
            metric(f"emails measured ({label})", lat.get("count", 0), ""),
            metric(f"emails lost or not sent ({label})", phase["lost"], "", at_most=0),
        ]
    return {
        "metrics": metrics,
        "details": {
            "phases": phases,
            "period_s": LATENCY_PERIOD_S,
            "seconds": seconds,
            "configured_interval_s": configured,
        },
    }
