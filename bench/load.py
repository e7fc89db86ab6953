"""HTTP load generators: wrk (preferred: C, epoll, LuaJIT) or an aiohttp fallback.

Both take the same input: a list of request variants (Authorization value,
body) sent round-robin over keep-alive connections at a fixed concurrency for
a fixed time, and return the same LoadResult.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import latency_summary_ms, say
from bench.procs import REGISTRY

LUA_SCRIPT = Path(__file__).with_name("wrk_load.lua")


@dataclass
class LoadResult:
    generator: str
    method: str
    path: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    bad: int
    items: int
    errors: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return self.bad + sum(v for k, v in self.errors.items() if k != "status")

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(
            rps=round(self.rps, 1),
            ok_rps=round(self.ok_rps, 1),
            items_per_s=round(self.items_per_s, 1),
            error_count=self.error_count,
        )
        return data


def pick_generator(requested: str = "auto") -> str:
    if requested == "wrk" or (requested == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise RuntimeError(
                "--generator wrk requested but wrk is not installed (apt-get install -y wrk)"
            )
        return "wrk"
    return "aiohttp"


def run_load(
    *,
    base_url: str,
    method: str,
    path: str,
    variants: list[tuple[str, str]],
    concurrency: int,
    duration: float,
    expected_status: int,
    mode: str = "status",
    generator: str = "auto",
    label: str = "",
    timeout: float = 30.0,
) -> LoadResult:
    """Send requests for `duration` seconds at `concurrency`; mode 'batch' counts accepted items."""
    kind = pick_generator(generator)
    say(
        f"load{(' ' + label) if label else ''}: {method} {path} c={concurrency}"
        f" for {duration:g}s ({kind})"
    )
    if kind == "wrk":
        result = _run_wrk(
            base_url, method, path, variants, concurrency, duration, expected_status, mode, timeout
        )
    else:
        result = _run_aiohttp(
            base_url, method, path, variants, concurrency, duration, expected_status, mode, timeout
        )
    lat = result.latency_ms
    say(
        f"  -> {result.requests:,} requests in {result.duration_s:.1f}s = {result.rps:,.0f} req/s, "
        f"{result.items_per_s:,.0f} items/s, p50 {lat.get('p50', float('nan')):.1f} ms, "
        f"p99 {lat.get('p99', float('nan')):.1f} ms, errors {result.error_count}"
    )
    return result


def _write_variants(variants: list[tuple[str, str]]) -> Path:
    handle = tempfile.NamedTemporaryFile("w", prefix="clarion-bench-", suffix=".tsv", delete=False)
    with handle:
        for auth, body in variants:
            if "\t" in auth or "\n" in auth or "\n" in body:
                raise ValueError(
                    "variants must not contain tabs/newlines in the header or newlines in the body"
                )
            handle.write(f"{auth}\t{body}\n")
    return Path(handle.name)


def _run_wrk(
    base_url, method, path, variants, concurrency, duration, expected_status, mode, timeout
) -> LoadResult:
    variants_path = _write_variants(variants)
    seconds = max(1, math.ceil(duration))
    threads = max(1, min(2, concurrency))
    argv = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds}s",
        "--timeout",
        f"{int(timeout)}s",
        "-s",
        str(LUA_SCRIPT),
        base_url,
        "--",
        str(variants_path),
        method,
        path,
        str(expected_status),
        mode,
    ]
    managed = REGISTRY.start(
        "wrk", argv, env={"PATH": "/usr/bin:/bin"}, log_path=None, stdout=subprocess.PIPE
    )
    try:
        out, err = managed.popen.communicate(timeout=seconds + timeout + 30)
    finally:
        REGISTRY.stop(managed, timeout=2)
        variants_path.unlink(missing_ok=True)
    text = out.decode(errors="replace")
    match = re.search(r"^BENCHJSON (\{.*\})$", text, re.M)
    if not match:
        raise RuntimeError(
            f"wrk gave no result (exit {managed.popen.returncode}):"
            f"\n{text[-3000:]}\n{err.decode()[-3000:]}"
        )
    stderr_text = err.decode(errors="replace").strip()
    if stderr_text:
        say(f"  wrk: {stderr_text[:600]}")
    data = json.loads(match.group(1))
    errors = {
        k[4:]: data[k]
        for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
    }
    return LoadResult(
        generator="wrk",
        method=method,
        path=path,
        concurrency=concurrency,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        ok=data["ok"],
        bad=data["bad"],
        items=data["items"],
        errors=errors,
        latency_ms={
            "p50": data["p50_us"] / 1000,
            "p90": data["p90_us"] / 1000,
            "p95": data["p95_us"] / 1000,
            "p99": data["p99_us"] / 1000,
            "p999": data["p999_us"] / 1000,
            "max": data["lat_max_us"] / 1000,
            "mean": round(data["lat_mean_us"] / 1000, 3),
        },
    )


# --------------------------------------------------------------------------- #
# aiohttp fallback: one event loop per core, keep-alive connections
# --------------------------------------------------------------------------- #


def _aiohttp_proc(args: dict, queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    queue.put(asyncio.run(_aiohttp_main(**args)))


async def _aiohttp_main(
    *,
    base_url,
    method,
    path,
    variants,
    concurrency,
    duration,
    expected_status,
    mode,
    timeout,
    offset,
) -> dict:
    import aiohttp

    prepared = []
    for auth, body in variants:
        headers = {}
        if auth:
            headers["Authorization"] = auth
        if body:
            headers["Content-Type"] = "application/json"
        prepared.append((headers, body.encode() if body else None))
    latencies: list[float] = []
    counters = {"requests": 0, "ok": 0, "bad": 0, "items": 0, "connect": 0, "read": 0, "timeout": 0}
    url = base_url + path
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    start = time.perf_counter()
    deadline = start + duration

    async def worker(index: int, session) -> None:
        i = (offset + index * 7919) % len(prepared)
        while time.perf_counter() < deadline:
            headers, body = prepared[i]
            i = (i + 1) % len(prepared)
            t0 = time.perf_counter()
            try:
                async with session.request(method, url, headers=headers, data=body) as resp:
                    payload = await resp.read()
                    status = resp.status
            except TimeoutError:
                counters["timeout"] += 1
                continue
            except aiohttp.ClientConnectionError:
                counters["connect"] += 1
                await asyncio.sleep(0.01)
                continue
            except aiohttp.ClientError:
                counters["read"] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            counters["requests"] += 1
            if status == expected_status:
                counters["ok"] += 1
                counters["items"] += payload.count(b'"status":"accepted"') if mode == "batch" else 1
            else:
                counters["bad"] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
    return {"elapsed": time.perf_counter() - start, "latencies": latencies, **counters}


def _run_aiohttp(
    base_url, method, path, variants, concurrency, duration, expected_status, mode, timeout
) -> LoadResult:
    procs = max(1, min(2, concurrency))
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding DB connections
    queue = ctx.Queue()
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    children = []
    for share in shares:
        args = dict(
            base_url=base_url,
            method=method,
            path=path,
            variants=variants,
            concurrency=share,
            duration=duration,
            expected_status=expected_status,
            mode=mode,
            timeout=timeout,
            offset=random.randrange(len(variants)),
        )
        child = ctx.Process(target=_aiohttp_proc, args=(args, queue), daemon=True)
        child.start()
        children.append(child)
    try:
        parts = [queue.get(timeout=duration + timeout + 60) for _ in children]
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
    latencies = [x for part in parts for x in part["latencies"]]
    summary = latency_summary_ms(latencies)
    summary.pop("count", None)
    return LoadResult(
        generator="aiohttp",
        method=method,
        path=path,
        concurrency=concurrency,
        duration_s=max(part["elapsed"] for part in parts),
        requests=sum(p["requests"] for p in parts),
        ok=sum(p["ok"] for p in parts),
        bad=sum(p["bad"] for p in parts),
        items=sum(p["items"] for p in parts),
        errors={k: sum(p[k] for p in parts) for k in ("connect", "read", "timeout")},
        latency_ms=summary,
    )
