"""Time-ordered UUIDs (RFC 9562 version 7) for event ids.

Random v4 ids scatter inserts over the whole primary-key index; v7 ids grow with
time, so accepting events appends to the right edge of the index.

Event ids are also the order of acceptance, which fan-out follows for each
recipient (services/lanes.py). So the 12 bits after the millisecond carry
the sub-millisecond time (RFC 9562 §6.2, method 3: ~244 ns steps), and ids made
by one process never repeat or go back (a batch keeps its order even within
one step, and so does a process whose clock steps back). Two requests one
after the other, in any processes of this host, get ids in that order.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_SUB_MS_STEPS = 4096  # 12 bits
_lock = threading.Lock()
_last_stamp = 0


def _next_stamp() -> int:
    """Milliseconds and 12 bits of fraction, strictly increasing in this process."""
    global _last_stamp
    now_ns = time.time_ns()
    milliseconds, rest_ns = divmod(now_ns, 1_000_000)
    stamp = (milliseconds << 12) | (rest_ns * _SUB_MS_STEPS // 1_000_000)
    with _lock:
        if stamp <= _last_stamp:
            stamp = _last_stamp + 1
        _last_stamp = stamp
    return stamp


def uuid7() -> uuid.UUID:
    stamp = _next_stamp()
    value = ((stamp >> 12) & ((1 << 48) - 1)) << 80  # unix_ts_ms
    value |= 0x7 << 76  # version
    value |= (stamp & 0xFFF) << 64  # rand_a: the sub-millisecond fraction
    value |= 0b10 << 62  # variant
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)
