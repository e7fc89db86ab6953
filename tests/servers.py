"""A real ASGI server subprocess (the Procfile's uvicorn command) for websocket and
browser tests."""

from __future__ import annotations

import os
import sys

import httpx

from tests.processes import ManagedProcess
from tests.redis_server import free_port


class AsgiServer(ManagedProcess):
    name = "asgi"

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
        workers: int = 1,
        debug: bool = False,
    ):
        super().__init__()
        # The port is kept across kill()/start(), so clients reconnect to the same address.
        self.port = free_port()
        self.workers = workers
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
            # When a test's flush (TRUNCATE) and a page still running here deadlock,
            # this side detects it first and is the one aborted (and retried),
            # not the suite's teardown.
            "PGOPTIONS": "-c deadlock_timeout=100ms",
            # The bell demo at /demo/ is served only with DEBUG on; everything
            # else is tested as deployed, with DEBUG off.
            "DEBUG": "true" if debug else "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{self.port},http://localhost:{self.port}",
            **(extra_env or {}),
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.launch(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--http",
                "httptools",
                "--ws",
                "websockets-sansio",
                "--ws-per-message-deflate",
                "false",
                "--timeout-graceful-shutdown",
                "10",
                "--lifespan",
                "off",
                "--no-access-log",
            ],
            self.env,
        )

        def ready() -> bool:
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_until(ready, timeout)

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
