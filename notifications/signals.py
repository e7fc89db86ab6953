from django.db.models.signals import post_migrate
from django.dispatch import receiver

from notifications.schedules import schedules_sync


@receiver(post_migrate)
def sync_beat_schedules(sender, app_config=None, **kwargs) -> None:
    if app_config is None or app_config.label != "notifications":
        return
    schedules_sync()
