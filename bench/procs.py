"""Subprocesses of the bench (web server, Celery workers, load generators).

Every process is started in its own session (process group) and registered;
``REGISTRY.stop_all()`` runs on normal exit, on error, on Ctrl-C / SIGTERM
(see __main__) and from atexit, and kills each whole group. Direct children
also get PR_SET_PDEATHSIG, so they are told to stop even if the bench itself
is killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.common import say, warn
from bench.env import ROOT, BenchEnv, bin_path

try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    _prctl = _libc.prctl
except OSError:  # pragma: no cover - not Linux/glibc
    _prctl = None
PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Managed:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path | None
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def workers(self) -> list[psutil.Process]:
        """Serving children (uvicorn workers / Celery pool), not multiprocessing helpers."""
        result = []
        for proc in self.tree()[1:]:
            try:
                if "resource_tracker" not in " ".join(proc.cmdline()):
                    result.append(proc)
            except psutil.Error:
                continue
        return result


class Registry:
    def __init__(self) -> None:
        self.procs: list[Managed] = []
        self.lock = threading.Lock()

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        log_path: Path | None,
        cwd: Path = ROOT,
        stdout=None,
    ) -> Managed:
        log = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
        try:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=stdout if stdout is not None else log,
                stderr=log if stdout is None else subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        finally:
            if log_path is not None:
                log.close()
        managed = Managed(name, argv, popen, log_path)
        with self.lock:
            self.procs.append(managed)
        return managed

    def stop(self, managed: Managed, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left of it."""
        pids = [p.pid for p in managed.tree()]
        try:
            if managed.alive():
                os.killpg(managed.pid, signal.SIGTERM)
                try:
                    managed.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    warn(f"{managed.name} did not stop in {timeout:.0f}s; killing it")
            try:
                os.killpg(managed.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            managed.popen.wait(10)
        except ProcessLookupError:
            pass
        # Stragglers that left the group (none expected): kill by pid, only those we saw.
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
            except psutil.Error:
                pass
        with self.lock:
            if managed in self.procs:
                self.procs.remove(managed)

    def stop_all(self) -> None:
        with self.lock:
            procs = list(reversed(self.procs))
        for managed in procs:
            try:
                self.stop(managed, timeout=10.0)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                warn(f"stopping {managed.name}: {exc}")


REGISTRY = Registry()
atexit.register(REGISTRY.stop_all)


# --------------------------------------------------------------------------- #
# Procfile
# --------------------------------------------------------------------------- #

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def procfile_command(name: str, values: dict[str, str]) -> list[str]:
    """argv of a Procfile line with ${VAR:-default} expanded from `values` (else defaults)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        key, sep, command = line.partition(":")
        if sep and key.strip() == name:
            expanded = _VAR.sub(
                lambda m: values.get(m.group(1) or m.group(3)) or (m.group(2) or ""),
                command.strip(),
            )
            argv = shlex.split(expanded)
            argv[0] = bin_path(argv[0])
            return argv
    raise KeyError(f"no {name!r} line in Procfile")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web(
    env: BenchEnv,
    *,
    timeout: float = 90.0,
    command: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[Managed, str]:
    """The ASGI server exactly as the Procfile's web line, on a free port.

    `command` (``--web-command``) replaces it for experiments, e.g.
    "gunicorn config.wsgi:application -w 8 -b {host}:{port}".
    """
    port = free_port()
    if command:
        argv = shlex.split(command.format(host="127.0.0.1", port=port))
        argv[0] = bin_path(argv[0])
    else:
        argv = procfile_command("web", {"HOST": "127.0.0.1", "PORT": str(port)})
    say(f"starting web: {' '.join(shlex.quote(a) for a in argv[1:])}")
    managed = REGISTRY.start(
        "web",
        argv,
        env=env.child_env(**(extra_env or {})),
        log_path=env.log_dir / f"web-{port}.log",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    ok_in_a_row = 0
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"web server exited early:\n{managed.log_tail()}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
                ok_in_a_row = ok_in_a_row + 1 if resp.status == 200 else 0
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            ok_in_a_row = 0
        if ok_in_a_row >= 5 and managed.workers():
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"web server not ready after {timeout:.0f}s:\n{managed.log_tail()}")
    # Let every worker process load the app: a burst of requests reaches all of them.
    _touch(base + "/healthz", 50)
    say(f"web ready at {base} (pid {managed.pid}, {len(managed.workers())} worker processes)")
    return managed, base


def _touch(url: str, times: int) -> None:
    import concurrent.futures

    def one(_):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
        except Exception:  # noqa: BLE001
            pass

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(times)))


def start_worker(
    env: BenchEnv,
    procfile_name: str,
    *,
    timeout: float = 90.0,
    extra_env: dict[str, str] | None = None,
) -> Managed:
    """A Celery worker exactly as a Procfile worker line; waits for ' ready.'."""
    argv = procfile_command(procfile_name, {})
    say(f"starting {procfile_name}: celery {' '.join(shlex.quote(a) for a in argv[1:])}")
    log_path = env.log_dir / f"{procfile_name}-{int(time.time() * 1000)}.log"
    managed = REGISTRY.start(
        procfile_name, argv, env=env.child_env(**(extra_env or {})), log_path=log_path
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path.exists() and b" ready." in log_path.read_bytes():
            say(
                f"{procfile_name} ready"
                f" (pid {managed.pid}, {len(managed.workers())} pool processes)"
            )
            return managed
        if not managed.alive():
            raise RuntimeError(f"{procfile_name} exited early:\n{managed.log_tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"{procfile_name} not ready after {timeout:.0f}s:\n{managed.log_tail()}")


def http_json(method: str, url: str, *, token: str | None = None, body=None, timeout: float = 30.0):
    import json

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        raise RuntimeError(f"{method} {url} -> {error.code}: {text[:1000]}") from None


# --------------------------------------------------------------------------- #
# CPU and memory accounting
# --------------------------------------------------------------------------- #


def listener_pid(port: int) -> int | None:
    """The pid listening on a local TCP port (the PostgreSQL postmaster, redis-server)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_LISTEN
                and conn.laddr
                and conn.laddr.port == port
                and conn.pid
            ):
                return conn.pid
    except psutil.Error:
        return None
    return None


def _tree_pids(root_pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class CpuMeter:
    """CPU seconds used by process groups over a window, as cores busy."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = {name: [pid for pid in pids if pid] for name, pids in groups.items()}
        self.start_cpu: dict[str, dict[tuple[int, float], float]] = {}
        self.t0 = 0.0

    def _snapshot(self) -> dict[str, dict[tuple[int, float], float]]:
        """Per group, CPU seconds per (pid, start time). Groups claim processes in
        order, so a later group whose tree contains an earlier one (the bench
        itself: parent of everything) gets only what is left (e.g. wrk)."""
        result: dict[str, dict[tuple[int, float], float]] = {}
        claimed: set[int] = set()
        for name, roots in self.groups.items():
            per: dict[tuple[int, float], float] = {}
            for root in roots:
                for proc in _tree_pids(root):
                    if proc.pid in claimed:
                        continue
                    claimed.add(proc.pid)
                    try:
                        times = proc.cpu_times()
                        per[(proc.pid, proc.create_time())] = times.user + times.system
                    except psutil.Error:
                        continue
            result[name] = per
        return result

    def start(self) -> None:
        self.start_cpu = self._snapshot()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        wall = max(time.monotonic() - self.t0, 1e-9)
        cores: dict[str, float] = {}
        for name, per in end.items():
            before = self.start_cpu.get(name, {})
            used = sum(value - before.get(key, 0.0) for key, value in per.items())
            cores[name] = round(used / wall, 3)
        cores["_wall_s"] = round(wall, 3)
        return cores


class RssSampler(threading.Thread):
    """Sum of RSS over a process tree, sampled every `interval` seconds."""

    def __init__(self, root_pid: int, interval: float = 0.5):
        super().__init__(daemon=True, name="rss-sampler")
        self.root_pid = root_pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def sample(self) -> int:
        total = 0
        for proc in _tree_pids(self.root_pid):
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            self.samples.append((round(time.monotonic() - t0, 2), self.sample()))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
