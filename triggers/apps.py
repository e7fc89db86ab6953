from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers and sweeps"

    def ready(self) -> None:
        from notifications.recipient_signals import recipient_erasing, recipient_exporting
        from triggers.recipients import erase_recipient_triggers, export_recipient_triggers

        recipient_erasing.connect(erase_recipient_triggers, dispatch_uid="clarion.triggers.erase")
        recipient_exporting.connect(
            export_recipient_triggers, dispatch_uid="clarion.triggers.export"
        )
