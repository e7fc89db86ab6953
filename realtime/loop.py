"""One long-lived asyncio loop per process, in a daemon thread, for the
channel-layer sends of sync code (Celery tasks, WSGI views).

`async_to_sync` from a plain thread makes a new event loop per call, and
channels-redis keeps its Redis connections per loop: every push paid for a
new connection (and redis-py's version lookup). Here the loop, and so the
connections, live as long as the process.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    if _loop is not None and _pid == os.getpid():
        return _loop
    with _lock:
        if _loop is None or _pid != os.getpid():  # first use, or a forked child
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="clarion-realtime-loop", daemon=True
            ).start()
            _loop, _pid = loop, os.getpid()
    return _loop


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    """Run a coroutine on the process's background loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, _background_loop()).result(timeout)
