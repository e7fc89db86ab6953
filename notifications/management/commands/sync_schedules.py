from django.core.management.base import BaseCommand

from notifications.schedules import schedules_sync


class Command(BaseCommand):
    help = "Reconcile the Beat schedules defined in code into django-celery-beat rows."

    def handle(self, *args, **options) -> None:
        for name in schedules_sync():
            self.stdout.write(f"schedule {name!r} in place")
