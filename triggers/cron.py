"""Cron expressions of broadcasts, read as Celery Beat reads them (pure logic).

A broadcast's schedule is a django-celery-beat CrontabSchedule, evaluated by
Celery's crontab in the broadcast's IANA zone. When its task runs, the fire
is keyed by the *slot* it belongs to: the latest time at or before now that
the expression names, in wall-clock time of the zone (so 09:00 in
America/Chicago is 14:00 UTC in summer and 15:00 UTC in winter). Two tasks
for the same slot (two Beat processes, a retried task) find the same slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from celery.schedules import crontab

FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
MAX_LOOKBACK_DAYS = 366 * 8  # "29 2 * * MON" comes round within 28 years; enough is a leap cycle


@dataclass(frozen=True)
class Cron:
    expression: str
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    schedule: crontab

    def matches_day(self, day: date) -> bool:
        s = self.schedule
        return (
            day.month in s.month_of_year
            and day.day in s.day_of_month
            and day.isoweekday() % 7 in s.day_of_week
        )


def parse_cron(expression: object) -> tuple[Cron | None, str | None]:
    """(Cron, None) for five fields Celery's crontab accepts, else (None, problem)."""
    if not isinstance(expression, str) or not 1 <= len(expression) <= 255:
        return None, 'Must be a cron expression of five fields, like "0 9 * * MON".'
    parts = expression.split()
    if len(parts) != 5:
        return None, f"Must have five fields (minute hour day month weekday), not {len(parts)}."
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        schedule = crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
        if not (schedule.minute and schedule.hour and schedule.day_of_month):
            raise ValueError("an empty field")
    except Exception as exc:  # noqa: BLE001 - celery's parser raises several kinds
        return None, f"Not a valid cron expression: {str(exc)[:200]}"
    cron = Cron(expression, minute, hour, day_of_month, month_of_year, day_of_week, schedule)
    return cron, None


def parse_zone(name: object) -> tuple[ZoneInfo | None, str | None]:
    if not isinstance(name, str) or name not in _zones():
        return None, 'Must be an IANA time zone, like "America/Chicago".'
    try:
        return ZoneInfo(name), None
    except (ZoneInfoNotFoundError, ValueError):
        return None, 'Must be an IANA time zone, like "America/Chicago".'


_zone_names: set[str] = set()


def _zones() -> set[str]:
    if not _zone_names:
        _zone_names.update(available_timezones())
    return _zone_names


def slot_at_or_before(cron: Cron, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The latest time the expression names at or before `now` (UTC), or None."""
    local_now = now.astimezone(zone)
    hours = sorted(cron.schedule.hour, reverse=True)
    minutes = sorted(cron.schedule.minute, reverse=True)
    for back in range(MAX_LOOKBACK_DAYS):
        day = local_now.date() - timedelta(days=back)
        if not cron.matches_day(day):
            continue
        for hour in hours:
            for minute in minutes:
                # fold=0: in the repeated hour of a fall-back change, the first.
                slot = datetime.combine(day, time(hour, minute), tzinfo=zone)
                if _exists(slot) and slot <= local_now:
                    return slot.astimezone(UTC)
    return None


def next_slot_after(cron: Cron, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The first time the expression names after `now` (UTC), or None."""
    local_now = now.astimezone(zone)
    hours = sorted(cron.schedule.hour)
    minutes = sorted(cron.schedule.minute)
    for ahead in range(MAX_LOOKBACK_DAYS):
        day = local_now.date() + timedelta(days=ahead)
        if not cron.matches_day(day):
            continue
        for hour in hours:
            for minute in minutes:
                slot = datetime.combine(day, time(hour, minute), tzinfo=zone)
                if _exists(slot) and slot > local_now:
                    return slot.astimezone(UTC)
    return None


def _exists(local: datetime) -> bool:
    """False for a wall-clock time skipped by a spring-forward change."""
    round_trip = local.astimezone(UTC).astimezone(local.tzinfo)
    return round_trip.replace(tzinfo=None) == local.replace(tzinfo=None)
