"""Daily caps and per-type throttles, counted atomically in Redis.

A counter is a Redis set of event ids per (recipient, channel, local day) for
caps, and per (type, recipient, throttle key, window) for throttles. Adding an
event id that is already there changes nothing, so a fan-out page run again
after a crash counts the same notifications once; the script checks and adds
in one step, so concurrent workers cannot both take the last slot.

Held-back deliveries become `skipped` with reason `cap` or `throttle`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connection

from realtime.presence import sync_client
from templates_app.keys import key_render

DAY_TTL_SECONDS = 2 * 86400

_TAKE = """
local allowed = {}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    if redis.call('SADD', key, ARGV[1]) == 0 then
        allowed[i] = 1                       -- counted before: this event is a re-run
    else
        local count = redis.call('SCARD', key)
        if count > limit then
            redis.call('SREM', key, ARGV[1])  -- over the limit: take it back out
            allowed[i] = 0
        else
            if count == 1 then redis.call('EXPIRE', key, tonumber(ARGV[2 * i + 1])) end
            allowed[i] = 1
        end
    end
end
return allowed
"""


@dataclass(frozen=True)
class LimitedDelivery:
    delivery_id: int
    recipient_id: int
    channel: str
    cap: int | None
    local_day: str | None
    event_id: str | None = None  # set on pages of several events


def limited_by_event(rows: list[LimitedDelivery]) -> dict[str, list[LimitedDelivery]]:
    """Rows of a page of several events, by event (each counts under its own id)."""
    by_event: dict[str, list[LimitedDelivery]] = {}
    for row in rows:
        by_event.setdefault(row.event_id, []).append(row)
    return by_event


_take_script = None


def _take(member: str, checks: list[tuple[str, int, int]]) -> list[bool]:
    """For each (key, limit, ttl): may `member` be counted under `limit`? (one round trip)"""
    if not checks:
        return []
    args: list = [member]
    for _, limit, ttl in checks:
        args.extend((limit, ttl))
    global _take_script
    client = sync_client()
    if _take_script is None:
        _take_script = client.register_script(_TAKE)  # EVALSHA: the script body is sent once
    flags = _take_script(keys=[key for key, _, _ in checks], args=args, client=client)
    return [bool(flag) for flag in flags]


def deliveries_apply_limits(
    *,
    event_id: str,
    type_key: str,
    throttle: dict | None,
    data: dict,
    rows: list[LimitedDelivery],
    actor: str = "",
    now: float | None = None,
) -> dict[str, int]:
    """Skip the deliveries over a throttle or a daily cap; returns counts by reason."""
    if not rows:
        return {}
    now = now or time.time()
    skipped: dict[str, list[int]] = {"throttle": [], "cap": []}
    throttled: set[int] = set()
    if throttle:
        window = int(throttle["window_seconds"])
        key_value = key_render(throttle.get("key") or "", data=data, actor=actor)
        recipients = sorted({row.recipient_id for row in rows})
        checks = [
            (
                f"clarion:throttle:{type_key}:{rid}:{key_value}:{int(now // window)}",
                int(throttle["limit"]),
                window * 2,
            )
            for rid in recipients
        ]
        throttled = {rid for rid, ok in zip(recipients, _take(event_id, checks)) if not ok}
        skipped["throttle"] = [row.delivery_id for row in rows if row.recipient_id in throttled]
    capped_rows = [row for row in rows if row.cap is not None and row.recipient_id not in throttled]
    checks = [
        (f"clarion:cap:{row.recipient_id}:{row.channel}:{row.local_day}", row.cap, DAY_TTL_SECONDS)
        for row in capped_rows
    ]
    skipped["cap"] = [
        row.delivery_id for row, ok in zip(capped_rows, _take(event_id, checks)) if not ok
    ]
    with connection.cursor() as cursor:
        for reason, ids in skipped.items():
            if ids:
                cursor.execute(
                    "UPDATE notifications_delivery"
                    " SET status = 'skipped', reason = %s, updated_at = now()"
                    " WHERE id = ANY(%s)",
                    [reason, ids],
                )
    return {reason: len(ids) for reason, ids in skipped.items() if ids}
