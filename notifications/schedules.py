"""Beat schedules, defined in code and reconciled into django-celery-beat rows.

Operators may pause a row in the admin (enabled stays as they set it); its
interval, task and queue always come from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

PREFIX = "clarion: "


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: float
    queue: str


def schedules() -> list[Schedule]:
    config = settings.CLARION
    return [
        Schedule(
            "event relay", "clarion.events.relay", config["RELAY_INTERVAL_SECONDS"], "critical"
        ),
        Schedule(
            "digest flush",
            "clarion.digests.flush_due",
            config["DIGEST_FLUSH_INTERVAL_SECONDS"],
            "high",
        ),
        Schedule(
            "delivery dispatch",
            "clarion.delivery.dispatch_due",
            config["DELIVERY_DISPATCH_INTERVAL_SECONDS"],
            "high",
        ),
        Schedule(
            "status webhooks",
            "clarion.delivery.status_webhooks_send",
            config["STATUS_WEBHOOK_INTERVAL_SECONDS"],
            "normal",
        ),
        # Trigger sweeps (the triggers app; named by task, not imported).
        Schedule(
            "saved searches",
            "clarion.triggers.saved_searches_sweep",
            config["SAVED_SEARCH_SWEEP_INTERVAL_SECONDS"],
            "normal",
        ),
        Schedule(
            "reminders",
            "clarion.triggers.reminders_sweep",
            config["REMINDER_SWEEP_INTERVAL_SECONDS"],
            "normal",
        ),
        Schedule(
            "escalations",
            "clarion.triggers.escalations_sweep",
            config["ESCALATION_SWEEP_INTERVAL_SECONDS"],
            "normal",
        ),
        Schedule(
            "purge idempotency keys", "clarion.maintenance.purge_idempotency_keys", 3600, "low"
        ),
        Schedule("realtime presence sweep", "clarion.realtime.presence_sweep", 60, "low"),
    ]


def schedules_sync() -> list[str]:
    """Create or update the PeriodicTask rows of schedules(); delete retired ones."""
    names = []
    with transaction.atomic():
        for schedule in schedules():
            every = schedule.every_seconds
            if every >= 1:
                interval, _ = IntervalSchedule.objects.get_or_create(
                    every=int(every), period=IntervalSchedule.SECONDS
                )
            else:  # sub-second intervals (tests) in microseconds
                interval, _ = IntervalSchedule.objects.get_or_create(
                    every=int(every * 1_000_000), period=IntervalSchedule.MICROSECONDS
                )
            name = PREFIX + schedule.name
            names.append(name)
            task, created = PeriodicTask.objects.get_or_create(
                name=name,
                defaults={"task": schedule.task, "interval": interval, "queue": schedule.queue},
            )
            changed = (task.task, task.interval_id, task.queue, task.expire_seconds) != (
                schedule.task,
                interval.id,
                schedule.queue,
                max(int(every), 1),
            )
            if changed or created:
                task.task = schedule.task
                task.interval = interval
                task.queue = schedule.queue
                # A run not picked up before the next one is due is dropped, so
                # a stopped worker does not come back to a pile of sweeps.
                task.expire_seconds = max(int(every), 1)
                task.save()
        PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=names).delete()
    return names
