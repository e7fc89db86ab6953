from celery import shared_task

from realtime.presence import presence_sweep as sweep


@shared_task(name="clarion.realtime.presence_sweep")
def presence_sweep() -> int:
    return sweep()
