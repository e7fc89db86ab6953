from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured

from notifications.rates import default_rate


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from notifications import (
            metrics,
            signals,  # noqa: F401  (post_migrate: beat schedules)
        )

        metrics.register_collectors()
        _check_default_rate()


def _check_default_rate() -> None:
    """A bad CLARION_API_RATE_LIMIT stops start-up rather than the first request."""
    try:
        default_rate()
    except ValueError as error:
        raise ImproperlyConfigured(f"CLARION_API_RATE_LIMIT: {error}") from error
