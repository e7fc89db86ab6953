from django.core.management.base import BaseCommand, CommandError

from notifications.api.auth import api_key_create


class Command(BaseCommand):
    help = "Create a producer API key; the key is printed once, alone on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--rate-limit",
            default="",
            metavar="N/s|N/m|N/h",
            help="requests per second, minute or hour (bursts up to N);"
            " default: CLARION_API_RATE_LIMIT",
        )

    def handle(self, *args, name: str, rate_limit: str, **options) -> None:
        try:
            key, raw = api_key_create(name=name, rate_limit=rate_limit)
        except ValueError as error:
            raise CommandError(f"--rate-limit: {error}") from error
        limit = f", rate limit {key.rate_limit}" if key.rate_limit else ""
        self.stderr.write(
            f"Created API key {key.name!r} ({key.prefix}…{limit}). It is not stored; keep it now:"
        )
        self.stdout.write(raw)
