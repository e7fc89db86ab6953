"""One run of a sweep at a time (across processes and hosts), by a
PostgreSQL session advisory lock per sweep name.

This is an efficiency, not the guarantee: a second run that got through
anyway (the lock's session died) would insert no fire twice, the unique
rows see to that. A killed worker's lock goes with its connection.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

SWEEP_LOCK_CLASS = 0x636C63  # "clc"


def _lock_id(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@contextmanager
def sweep_lock(name: str) -> Iterator[bool]:
    """Yields True while this process holds sweep `name`, False when another does."""
    lock = [SWEEP_LOCK_CLASS, _lock_id(name)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", lock)
        (held,) = cursor.fetchone()
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
