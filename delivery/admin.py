"""Deliveries in the admin: their attempts, and the operator's actions on them."""

from django.contrib import admin

from delivery.services.operations import deliveries_requeue, deliveries_send_now
from notifications.admin import LargeTableAdmin
from notifications.models import Delivery, DeliveryAttempt


class AttemptInline(admin.TabularInline):
    """The delivery's attempt timeline, oldest first: which provider, what it answered."""

    model = DeliveryAttempt
    extra = 0
    can_delete = False
    ordering = ("id",)
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

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(LargeTableAdmin):
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
    inlines = [AttemptInline]
    actions = ["send_now", "requeue"]

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
class DeliveryAttemptAdmin(LargeTableAdmin):
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
