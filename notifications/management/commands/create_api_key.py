from django.core.management.base import BaseCommand

from notifications.api.auth import api_key_create


class Command(BaseCommand):
    help = "Create a producer API key; the key is printed once, alone on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")

    def handle(self, *args, name: str, **options) -> None:
        key, raw = api_key_create(name=name)
        self.stderr.write(f"Created API key {key.name!r} ({key.prefix}…). It is not stored; keep it now:")
        self.stdout.write(raw)
