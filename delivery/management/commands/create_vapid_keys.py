"""`python manage.py create_vapid_keys`: a new VAPID key pair for web push, as
the two environment lines to add to the deployment:

    CLARION_VAPID_PRIVATE_KEY=<raw P-256 private key, base64url>
    CLARION_VAPID_PUBLIC_KEY=<uncompressed public point, base64url>

The public key is what browsers subscribe with (`applicationServerKey`; the
bell fetches it from GET /api/v1/inbox/web-push-key). Subscriptions are bound
to it: a new pair makes every existing subscription unusable, so generate it
once and keep it with the deployment's other secrets.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from delivery.providers.webpush import vapid_keys_generate


class Command(BaseCommand):
    help = "Print a new VAPID key pair for web push (CLARION_VAPID_PRIVATE_KEY/PUBLIC_KEY)."

    def handle(self, *args, **options) -> None:
        private_key, public_key = vapid_keys_generate()
        self.stdout.write(f"CLARION_VAPID_PRIVATE_KEY={private_key}")
        self.stdout.write(f"CLARION_VAPID_PUBLIC_KEY={public_key}")
