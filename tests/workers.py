"""A real Celery worker subprocess for pipeline tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL for the database the test process is using (the test db)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    host = settings_dict.get("HOST") or ""
    host = quote(host, safe="") if host.startswith("/") else host
    port = settings_dict.get("PORT") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{settings_dict['NAME']}"


class WorkerProcess:
    """A `celery worker` consuming every priority queue, startable and killable."""

    def __init__(self, *, database_url: str, redis_url: str, extra_env: dict[str, str] | None = None,
                 queues: str = "critical,high,normal,low", concurrency: int = 2):
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CLARION_FANOUT_PAGE_SIZE": "1000",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.queues = queues
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="clarion-worker-", suffix=".log")[1])

    def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "-Q", self.queues, "-c", str(self.concurrency), "-P", "prefork",
                "--without-mingle", "--without-gossip", "-n", f"test-{os.getpid()}-{time.time_ns()}@%h",
                "-l", "info",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill() takes the pool children too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                if b" ready." in handle.read():
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"celery worker not ready after {timeout}s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
