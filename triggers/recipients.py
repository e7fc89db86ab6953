"""What the triggers app keeps of a recipient, for erasure and export."""

from __future__ import annotations

from django.db import connection

from triggers.models import Trigger


def erase_recipient_triggers(sender, *, recipient_id: int, **kwargs) -> None:
    with connection.cursor() as cursor:
        for statement in (
            "DELETE FROM triggers_triggerfire WHERE trigger_id IN"
            " (SELECT id FROM triggers_trigger WHERE recipient_id = %s)",
            "DELETE FROM triggers_triggeranchor WHERE trigger_id IN"
            " (SELECT id FROM triggers_trigger WHERE recipient_id = %s)",
            "DELETE FROM triggers_trigger WHERE recipient_id = %s",
        ):
            cursor.execute(statement, [recipient_id])


def export_recipient_triggers(sender, *, recipient_id: int, **kwargs) -> dict:
    rows = Trigger.objects.filter(recipient_id=recipient_id).select_related("type").order_by("key")
    return {
        "triggers": [
            {
                "key": t.key,
                "kind": t.kind,
                "match": t.match,
                "on": [c for c, on in (("created", t.on_created), ("updated", t.on_updated)) if on],
                "type": t.type.key,
                "created_at": t.created_at,
            }
            for t in rows
        ]
    }
