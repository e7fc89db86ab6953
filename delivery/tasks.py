"""Celery tasks of the delivery app: thin wrappers over delivery.services."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.db import OperationalError

from delivery.services.dispatch import deliveries_dispatch_due
from delivery.services.send import deliveries_send
from delivery.services.status_webhooks import status_webhooks_send_due
from notifications.services.sweep_runs import sweep_run

DB_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": 8,
}


@shared_task(name="clarion.delivery.dispatch_due", **DB_RETRY)
def dispatch_due() -> int:
    # Also releases deliveries held by quiet hours, backoff and open breakers.
    with sweep_run("delivery dispatch") as tally:
        tally.examined = tally.produced = deliveries_dispatch_due()
    return tally.produced


@shared_task(name="clarion.delivery.send", **DB_RETRY)
def send(*, delivery_ids: list[int], lease: str) -> dict[str, int]:
    return deliveries_send(delivery_ids=delivery_ids, lease=datetime.fromisoformat(lease))


@shared_task(name="clarion.delivery.status_webhooks_send", **DB_RETRY)
def status_webhooks_send() -> dict[str, int]:
    with sweep_run("status webhooks") as tally:
        counts = status_webhooks_send_due()
        tally.examined = sum(counts.values())
        tally.produced = counts.get("sent", 0)
    return counts
