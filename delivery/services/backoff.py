"""How long a retryable failure waits before the next attempt: one policy for
deliveries and status webhook calls.

Exponential backoff with full jitter (a uniformly random wait between 0 and
`base * 2**attempt`, at most `cap`): workers that failed together do not
come back together. A provider's `Retry-After` is honoured when it asks
for longer than the draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**62 * any sane base is far past every cap; the exponent stops here so a
# huge attempt count cannot overflow the float.
_MAX_EXPONENT = 62


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the `attempt`-th failed attempt (1 for the first)."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    ceiling = min(max(cap, 0.0), max(base, 0.0) * 2.0**exponent)
    delay = rng() * ceiling
    if retry_after is not None and retry_after > delay:
        delay = float(retry_after)
    return delay
