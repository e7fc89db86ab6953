"""Deliveries in the admin: read-only records with their attempt timeline,
and the operator's actions on them."""

from django.contrib import admin
from django.utils.html import format_html

from delivery.services.operations import deliveries_requeue, deliveries_send_now
from notifications.admin_display import ReadOnlyInline, RecordAdmin, change_link, short_id
from notifications.models import Delivery, DeliveryAttempt

# The event's page links to its deliveries through this lookup (two relations
# away, so the admin refuses it unless it is named).
EVENT_LOOKUPS = {"notification__event__id__exact", "notification__event__id"}


class AttemptInline(ReadOnlyInline):
    """The delivery's attempt timeline, oldest first: which provider, what it answered."""

    model = DeliveryAttempt
    ordering = ("id",)
    show_change_link = False
    fields = (
        "created_at",
        "provider",
        "outcome",
        "status_code",
        "duration_ms",
        "error",
        "response",
    )
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(RecordAdmin):
    list_display = (
        "id",
        "notification_id",
        "channel",
        "status",
        "reason",
        "attempts",
        "provider",
        "next_attempt_at",
        "updated_at",
    )
    list_filter = ("channel", "status", "reason")
    raw_id_fields = ("notification",)
    readonly_fields = ("its_event",)
    inlines = [AttemptInline]
    actions = ["send_now", "requeue"]

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return lookup in EVENT_LOOKUPS or super().lookup_allowed(lookup, value, request)

    @admin.display(description="event")
    def its_event(self, obj: Delivery) -> str:
        event_id = obj.notification.event_id
        return format_html(
            "{} {}", change_link("notifications_event", event_id, "open"), short_id(event_id)
        )

    @admin.action(description="Send now (release a quiet-hours hold)")
    def send_now(self, request, queryset):
        released = deliveries_send_now(delivery_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(
            request, f"{released} held deliveries released; the dispatch sweep sends them next."
        )

    @admin.action(description="Replay (failed, dead or without provider)")
    def requeue(self, request, queryset):
        queued = deliveries_requeue(delivery_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(
            request,
            f"{queued} deliveries queued again with fresh attempts; others were left as they are.",
        )


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(RecordAdmin):
    list_display = (
        "id",
        "delivery_id",
        "provider",
        "outcome",
        "status_code",
        "duration_ms",
        "created_at",
    )
    list_filter = ("outcome",)
    raw_id_fields = ("delivery",)
