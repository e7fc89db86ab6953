from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from notifications import signals  # noqa: F401  (post_migrate: beat schedules)
        from notifications import metrics

        metrics.register_collectors()
