from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from common.errors import InvalidInput
from notifications.services.types import notification_types_load


class Command(BaseCommand):
    help = "Load notification types from a YAML or JSON file (a mapping of key → definition)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options) -> None:
        if not file.exists():
            raise CommandError(f"{file} does not exist")
        try:
            results = notification_types_load(path=file)
        except InvalidInput as error:
            details = "; ".join(f"{k}: {', '.join(v)}" for k, v in error.errors.items())
            raise CommandError(f"{error.detail} {details}".strip()) from error
        for key, created in results:
            self.stdout.write(f"{'created' if created else 'updated'} {key}")
