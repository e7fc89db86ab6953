"""The Celery app of `make run`: config's own, with the routine lines of the
periodic sweeps at DEBUG (clarion_dev.quiet_logs).

    celery -A clarion_dev.celery_app worker ...   (what clarion_dev.run starts)

CLARION_DEV_QUIET_LOGS=0 leaves them at INFO, as production logs them (and as
`make bench ARGS=run_idle_output` measures its baseline).
"""

from __future__ import annotations

from clarion_dev import quiet_logs
from config.celery import app
from config.env import env_bool

if env_bool("CLARION_DEV_QUIET_LOGS", True):
    quiet_logs.install()

__all__ = ["app"]
