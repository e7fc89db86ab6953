"""A real Celery worker subprocess for pipeline tests."""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import quote

from tests.processes import ManagedProcess


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL for the database the test process is using (the test db)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    host = settings_dict.get("HOST") or ""
    host = quote(host, safe="") if host.startswith("/") else host
    port = settings_dict.get("PORT") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{settings_dict['NAME']}"


class WorkerProcess(ManagedProcess):
    """A `celery worker` consuming every priority queue, startable and killable."""

    name = "worker"

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
        queues: str = "critical,high,normal,low",
        concurrency: int = 2,
    ):
        super().__init__()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CLARION_FANOUT_PAGE_SIZE": "1000",
            "PYTHONUNBUFFERED": "1",
            # When a test's flush (TRUNCATE) and a page still running here deadlock,
            # this side detects it first and is the one aborted (and retried),
            # not the suite's teardown.
            "PGOPTIONS": "-c deadlock_timeout=100ms",
            **(extra_env or {}),
        }
        self.queues = queues
        self.concurrency = concurrency

    def start(self, timeout: float = 60.0) -> None:
        offset = self.log_path.stat().st_size
        self.launch(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                self.queues,
                "-c",
                str(self.concurrency),
                "-P",
                "prefork",
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"test-{os.getpid()}-{time.time_ns()}@%h",
                "-l",
                "info",
            ],
            self.env,
        )

        def ready() -> bool:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                return b" ready." in handle.read()

        self.wait_until(ready, timeout)
