"""The bench's own services: database ``clarion_bench`` and Redis db 14.

Servers are found exactly like ``clarion_dev.testrun``: DATABASE_URL /
REDIS_URL from the environment when both are set, else the private servers of
``clarion_dev.services.ensure_services()``. The bench then points at its own
database (created and migrated here) and Redis database on those servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.common import say
from config.env import redis_url_with_db

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BENCH_DATABASE = os.environ.get("CLARION_BENCH_DB", "clarion_bench")
BENCH_REDIS_DB = int(os.environ.get("CLARION_BENCH_REDIS_DB", "14"))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def bin_path(name: str) -> str:
    """A console script of this venv (uvicorn, celery, ...), else the bare name."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class BenchEnv:
    database_url: str
    redis_url: str
    server_database_url: str
    run_id: str
    log_dir: Path
    extra: dict = field(default_factory=dict)

    def child_env(self, **extra: str) -> dict[str, str]:
        """Environment of every subprocess (web, workers, manage.py)."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            DEBUG="false",
            PYTHONUNBUFFERED="1",
        )
        # Experiments may point DJANGO_SETTINGS_MODULE at a module that imports config.settings.
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        env.update(extra)
        return env

    def connect(self, autocommit: bool = True):
        """A raw psycopg connection to the bench database (set-up SQL, COPY, polling)."""
        import psycopg

        return psycopg.connect(self.database_url, autocommit=autocommit)

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url)

    def manage(self, *args: str, capture: bool = True, timeout: float = 600) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.child_env(),
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed (exit {result.returncode}):\n"
                f"{(result.stdout or '')[-2000:]}\n{(result.stderr or '')[-4000:]}"
            )
        return result.stdout or ""

    def describe(self) -> dict:
        return {
            "database_url": redact(self.database_url),
            "redis_url": redact(self.redis_url),
            **{k: v for k, v in self.extra.items() if not k.startswith("_")},
        }


def _server_urls() -> tuple[str, str]:
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        from clarion_dev import services

        for name, value in services.ensure_services().items():
            os.environ.setdefault(name, value)
    return os.environ["DATABASE_URL"], os.environ["REDIS_URL"]


def _ensure_database(server_url: str, name: str) -> bool:
    import psycopg
    from psycopg import sql

    admin_url = with_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


RUN_LOCK_KEY = 0x636C6172  # advisory lock id: one bench run per bench database at a time
RUN_LOCK_WAIT = float(os.environ.get("CLARION_BENCH_LOCK_WAIT", "1800"))


def _acquire_run_lock(database_url: str):
    """Hold a session advisory lock for the whole run: two runs sharing the bench
    database and Redis db would flush each other's queues and delete each other's
    events. The lock lives in PostgreSQL, so it also covers runs from other hosts."""
    import time

    import psycopg

    conn = psycopg.connect(database_url, autocommit=True, application_name="clarion-bench-lock")
    deadline = time.monotonic() + RUN_LOCK_WAIT
    told = 0.0
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()[0]:
        holder = conn.execute(
            "SELECT a.pid, a.client_addr, a.backend_start"
            " FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.objid = %s AND l.granted",
            (RUN_LOCK_KEY,),
        ).fetchone()
        if time.monotonic() > deadline:
            conn.close()
            raise RuntimeError(
                f"another bench run holds the bench lock ({holder});"
                f" gave up after {RUN_LOCK_WAIT:.0f}s"
            )
        if time.monotonic() - told > 30:
            told = time.monotonic()
            who = (
                f"backend pid {holder[0]} from {holder[1]}, since {holder[2]:%H:%M:%S}"
                if holder
                else "?"
            )
            say(f"another bench run is using {BENCH_DATABASE} ({who}); waiting for it to finish")
        time.sleep(2)
    return conn


def prepare(run_id: str) -> BenchEnv:
    """Find the servers, create and migrate ``clarion_bench``, point this process at it."""
    server_db, server_redis = _server_urls()
    database_url = with_database(server_db, BENCH_DATABASE)
    redis_url = redis_url_with_db(server_redis, BENCH_REDIS_DB)
    if urlsplit(database_url).path == urlsplit(server_db).path:
        raise RuntimeError(f"refusing to bench in the application database {redact(server_db)}")
    if not os.environ.get("SECRET_KEY"):
        # Settings have no built-in key. A random one per run serves the bench
        # (tokens live one run).
        import secrets

        os.environ["SECRET_KEY"] = "bench-" + secrets.token_urlsafe(48)
        secret_key_source = "generated for this run"
    else:
        secret_key_source = "environment"
    created = _ensure_database(server_db, BENCH_DATABASE)
    server = redact(server_db).rsplit("/", 1)[0]
    say(f"database {BENCH_DATABASE} {'created' if created else 'exists'} on {server}")
    lock_conn = _acquire_run_lock(database_url)
    log_dir = RESULTS_DIR / "logs" / run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    env = BenchEnv(
        database_url=database_url,
        redis_url=redis_url,
        server_database_url=server_db,
        run_id=run_id,
        log_dir=log_dir,
    )
    env.extra["_lock_conn"] = lock_conn
    say("applying migrations to the bench database (manage.py migrate)")
    env.manage("migrate", "--no-input", "-v", "0")
    # This process (in-process scenarios, Celery publishing) uses the bench services too.
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    with env.connect() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value jsonb NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        )
        env.extra["postgres_version"] = conn.execute("SHOW server_version").fetchone()[0]
        env.extra["postgres_settings"] = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in (
                "shared_buffers",
                "synchronous_commit",
                "fsync",
                "max_connections",
                "work_mem",
            )
        }
    env.extra["fanout_page_size_env"] = os.environ.get("CLARION_FANOUT_PAGE_SIZE")
    env.extra["secret_key"] = secret_key_source
    env.extra["embedded_services"] = bool(os.environ.get("CLARION_EMBEDDED"))
    return env


_django_ready = False


def django_setup() -> None:
    global _django_ready
    if _django_ready:
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    _django_ready = True


def meta_get(env: BenchEnv, key: str):
    with env.connect() as conn:
        row = conn.execute("SELECT value FROM bench_meta WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def meta_put(env: BenchEnv, key: str, value) -> None:
    from psycopg.types.json import Jsonb

    with env.connect() as conn:
        conn.execute(
            "INSERT INTO bench_meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
            (key, Jsonb(value)),
        )


def meta_delete(env: BenchEnv, key: str) -> None:
    with env.connect() as conn:
        conn.execute("DELETE FROM bench_meta WHERE key = %s", (key,))


def checkpoint(env: BenchEnv) -> None:
    """Flush dirty buffers before a measurement, so a checkpoint does not land inside it."""
    try:
        with env.connect() as conn:
            conn.execute("CHECKPOINT")
    except Exception as exc:  # noqa: BLE001 - needs superuser/pg_checkpoint; only noise reduction
        say(f"(CHECKPOINT skipped: {type(exc).__name__})")


def autovacuum_running(env: BenchEnv) -> list[str]:
    with env.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT query FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                " AND datname = current_database()"
            ).fetchall()
        ]


def vacuum_if_dirty(env: BenchEnv, table: str, min_dead: int = 10_000) -> int:
    """VACUUM ANALYZE `table` when it has dead tuples, so autovacuum does not start
    mid-measurement."""
    with env.connect() as conn:
        row = conn.execute(
            "SELECT n_dead_tup, n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = %s",
            (table,),
        ).fetchone()
        if not row or max(row) < min_dead:
            return 0
        say(f"VACUUM ANALYZE {table} ({row[0]:,} dead tuples) before measuring")
        conn.execute(f"VACUUM (ANALYZE) {table}")
        return row[0]


def db_activity(env: BenchEnv) -> dict:
    """Background DB work that could disturb a measurement (autovacuum, other backends)."""
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT backend_type, state, count(*) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() GROUP BY 1, 2"
        ).fetchall()
    return {f"{b}/{s}": n for b, s, n in rows}
