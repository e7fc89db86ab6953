"""`make run` as a developer runs it: the real `python -m clarion_dev.run` (honcho, uvicorn,
two Celery workers and Beat under clarion_dev.respawn), on its own database and Redis.

Ctrl-C is a SIGINT to the terminal's foreground process group: here the group the
test starts `clarion_dev.run` in. Every process of the tree must be gone within
10 s, including when Beat is waiting inside a database query (the reported hang).
Slow: each case starts the whole layout (~10 s).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import psycopg
import pytest

from tests.redis_server import RedisServer, free_port
from tests.workers import database_url_for

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

ROOT = Path(__file__).resolve().parent.parent
STOP_LIMIT_SECONDS = 10.0
BEAT_TABLES = "django_celery_beat_periodictasks, django_celery_beat_periodictask"
MINT_TOKEN = (
    "from notifications.models import Recipient; "
    "from notifications.services.tokens import recipient_token_issue; "
    "print(recipient_token_issue(recipient_id=Recipient.objects.get(external_id='alice').id).token)"
)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def make_run_database(django_db_setup, django_db_blocker) -> Iterator[str]:
    """A database of its own (make run migrates it and loads demo data), dropped afterwards."""
    from django.db import connection

    test_url = database_url_for(connection.settings_dict)
    name = f"{connection.settings_dict['NAME']}_make_run"
    with psycopg.connect(with_database(test_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield with_database(test_url, name)
    with psycopg.connect(with_database(test_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def make_run_redis() -> Iterator[RedisServer]:
    """A Redis of its own: make run's Beat and workers never meet the suite's queues."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def devdata(tmp_path_factory) -> Path:
    """make run's data folder (CLARION_DEVDATA): its secret key, demo API key, logs here."""
    return tmp_path_factory.mktemp("devdata")


class MakeRun:
    """`python -m clarion_dev.run` in a process group of its own, as in a terminal."""

    def __init__(
        self, database_url: str, redis_url: str, devdata: Path, extra_env: dict | None = None
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = devdata / f"make-run-{self.port}.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SECRET_KEY", "CLARION_EMBEDDED", "DEBUG")
        }
        env.update(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            CLARION_DEVDATA=str(devdata),
            HOST="127.0.0.1",
            PORT=str(self.port),
            PYTHONUNBUFFERED="1",
            # The same layout with fewer pool processes: this machine runs other tests too.
            WEB_CONCURRENCY="1",
            URGENT_CONCURRENCY="1",
            BULK_CONCURRENCY="1",
        )
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clarion_dev.run"],
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_up(self, timeout: float = 90.0) -> None:
        """Web answers /healthz, both workers said ready, Beat has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if (
                "beat: Starting..." in log
                and "urgent@" in log
                and "bulk@" in log
                and log.count(" ready.") >= 2
                and self.healthy()
            ):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"make run did not come up:\n{self.log()[-4000:]}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def kill_everything(self, processes: list[psutil.Process]) -> None:
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(10)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.NoSuchProcess:
            pass
    return left


@contextmanager
def make_run_up(
    server_url: str, name: str, devdata: Path, extra_env: dict | None = None
) -> Iterator[MakeRun]:
    """`make run` up on a fresh database `name` of `server_url`'s server and a
    private Redis; on leaving, stopped with Ctrl-C (whatever is left is killed)
    and the database dropped."""
    admin_url = with_database(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    redis = RedisServer()
    redis.start()
    running = MakeRun(with_database(server_url, name), redis.url, devdata, extra_env)
    tree = []
    try:
        running.wait_until_up(timeout=180)
        tree = running.tree()
        yield running
    finally:
        if running.process.poll() is None:
            running.ctrl_c()
            try:
                running.process.wait(15)
            except Exception:  # noqa: BLE001 - whatever is left is killed below
                pass
        running.kill_everything(alive(tree))
        redis.stop()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def describe(processes: list[psutil.Process]) -> list[str]:
    names = []
    for process in processes:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            names.append(str(process.pid))
    return names


def beat_waits_on_a_lock(database_url: str) -> bool:
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND wait_event_type = 'Lock'"
                " AND query LIKE %s",
                (name, "%django_celery_beat%"),
            ).fetchone()[0]
        )


@pytest.fixture
def make_run(make_run_database, make_run_redis, devdata) -> Iterator[MakeRun]:
    running = MakeRun(make_run_database, make_run_redis.url, devdata)
    seen: list[psutil.Process] = []
    try:
        running.wait_until_up()
        seen = running.tree()
        yield running
    finally:
        # Whatever a failed test left behind.
        running.kill_everything(
            alive(seen + running.tree() if running.process.poll() is None else seen)
        )


@pytest.mark.parametrize(
    "beat_busy", [False, True, False], ids=["idle", "beat-waiting-in-a-query", "idle-again"]
)
def test_ctrl_c_stops_every_process_of_make_run_within_10_seconds(
    make_run, make_run_database, beat_busy
):
    tree = make_run.tree()
    commands = " ".join(" ".join(p.cmdline()) for p in tree)
    assert all(part in commands for part in ("honcho", "uvicorn", "worker", "beat")), describe(tree)
    locker = None
    if beat_busy:
        # Beat reads or writes these tables on every tick: its query now waits on our lock.
        locker = psycopg.connect(make_run_database)
        locker.execute(f"LOCK TABLE {BEAT_TABLES} IN ACCESS EXCLUSIVE MODE")
        deadline = time.monotonic() + 20
        while not beat_waits_on_a_lock(make_run_database):
            assert time.monotonic() < deadline, "Beat never queried its tables"
            time.sleep(0.1)
    try:
        started = time.monotonic()
        make_run.ctrl_c()
        while alive(tree) and time.monotonic() - started < STOP_LIMIT_SECONDS:
            time.sleep(0.05)
        took = time.monotonic() - started
        left = alive(tree)
        assert not left, (
            f"still running {took:.1f} s after Ctrl-C: {describe(left)}\n{make_run.log()[-3000:]}"
        )
        print(f"make run stopped in {took:.2f} s (beat busy: {beat_busy})")
    finally:
        if locker is not None:
            locker.close()
    assert make_run.process.wait(5) == 0


def test_a_token_minted_in_a_second_shell_verifies_in_the_server(
    make_run, make_run_database, make_run_redis, devdata
):
    key_file = devdata / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    def mint(**extra: str) -> str:
        # A second shell: the same servers (as `python -m clarion_dev.services env` gives
        # them), no SECRET_KEY of its own.
        env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
        env.update(
            DATABASE_URL=make_run_database,
            REDIS_URL=make_run_redis.url,
            CLARION_EMBEDDED="1",
            CLARION_DEVDATA=str(devdata),
            **extra,
        )
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", MINT_TOKEN],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip().splitlines()[-1]

    def inbox_status(token: str) -> int:
        return httpx.get(
            f"{make_run.base_url}/api/v1/inbox", headers={"Authorization": f"Recipient {token}"}
        ).status_code

    assert inbox_status(mint()) == 200
    assert inbox_status(mint(SECRET_KEY="some-other-key")) == 401
