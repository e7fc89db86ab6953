"""Demo data for `make run`: types, recipients, a topic, and an API key."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from notifications.api.auth import api_key_create, hash_api_key
from notifications.models import ApiKey
from notifications.services.recipients import recipient_put
from notifications.services.topics import topic_subscribers_update
from notifications.services.types import notification_types_load

DEMO_RECIPIENTS = {
    "alice": {"email": "alice@example.com", "locale": "en", "timezone": "Europe/London"},
    "bruno": {"email": "bruno@example.com", "locale": "pt-BR", "timezone": "America/Sao_Paulo"},
    "chen": {
        "email": "chen@example.com",
        "locale": "en",
        "timezone": "Asia/Shanghai",
        "phone": "+8613800000000",
    },
}
DEMO_TOPIC = "post:1:followers"


class Command(BaseCommand):
    help = "Load demo notification types, recipients and a topic; print a demo API key."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--key-file", type=Path, help="Keep the demo API key here and reuse it next time."
        )

    def handle(self, *args, key_file: Path | None = None, **options) -> None:
        notification_types_load(path=Path(settings.BASE_DIR) / "demo" / "notification_types.yaml")
        for external_id, profile in DEMO_RECIPIENTS.items():
            recipient_put(external_id=external_id, body=profile)
        topic_subscribers_update(key=DEMO_TOPIC, body={"add": list(DEMO_RECIPIENTS)})
        self.stderr.write(
            f"demo: {len(DEMO_RECIPIENTS)} recipients, topic {DEMO_TOPIC!r},"
            " types from demo/notification_types.yaml"
        )
        raw = None
        if key_file and key_file.exists():
            raw = key_file.read_text().strip()
            if not ApiKey.objects.filter(
                key_hash=hash_api_key(raw), revoked_at__isnull=True
            ).exists():
                raw = None
        if raw is None:
            _, raw = api_key_create(name="demo")
            if key_file:
                key_file.parent.mkdir(parents=True, exist_ok=True)
                key_file.write_text(raw + "\n")
                key_file.chmod(0o600)
        self.stdout.write(raw)
