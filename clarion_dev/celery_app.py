"""The Celery app of `make run`: config's own, with the routine lines of the
periodic sweeps at DEBUG (clarion_dev.quiet_logs).

    celery -A clarion_dev.celery_app worker ...   (what clarion_dev.run starts)
"""

from __future__ import annotations

from clarion_dev import quiet_logs
from config.celery import app

quiet_logs.install()

__all__ = ["app"]
