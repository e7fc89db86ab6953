from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "delivery"

    def ready(self) -> None:
        from anymail.signals import tracking

        from delivery import metrics
        from delivery.hooks.email_events import on_anymail_tracking

        metrics.register_collectors()
        # ESPs' delivery/open/bounce events, as anymail's webhooks normalize them.
        tracking.connect(on_anymail_tracking, dispatch_uid="clarion.email_events")
