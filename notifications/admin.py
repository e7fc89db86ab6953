from django.contrib import admin, messages
from django.utils import timezone

from notifications.api.auth import api_key_create
from notifications.models import (
    ApiKey,
    Delivery,
    DeliveryAttempt,
    Event,
    IdempotencyKey,
    Notification,
    NotificationType,
    Recipient,
    Subscription,
    Topic,
)
from notifications.publish import publish_fan_out_page


class LargeTableAdmin(admin.ModelAdmin):
    """Tables that grow to millions of rows: no exact counts, ids not dropdowns."""

    show_full_result_count = False
    list_per_page = 50


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = api_key_create(name=obj.name)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        messages.warning(request, f"New API key for {obj.name} (shown once, copy it now): {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s); they stop working within 30 seconds.")


@admin.register(Recipient)
class RecipientAdmin(LargeTableAdmin):
    list_display = ("external_id", "email", "phone", "locale", "timezone", "created_at")
    search_fields = ("=external_id", "email")
    raw_id_fields = ("user",)


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ("key", "created_at")
    search_fields = ("key",)


@admin.register(Subscription)
class SubscriptionAdmin(LargeTableAdmin):
    list_display = ("topic", "recipient", "created_at")
    raw_id_fields = ("topic", "recipient")
    list_select_related = ("topic", "recipient")


@admin.register(NotificationType)
class NotificationTypeAdmin(admin.ModelAdmin):
    list_display = ("key", "category", "priority", "channels", "retired_at", "updated_at")
    list_filter = ("category", "priority")
    search_fields = ("key",)


@admin.register(Event)
class EventAdmin(LargeTableAdmin):
    list_display = ("id", "type", "status", "priority", "recipient_count", "created_at", "send_at", "finished_at")
    list_filter = ("status", "priority")
    list_select_related = ("type",)
    search_fields = ("=id", "=idempotency_key")
    readonly_fields = [f.name for f in Event._meta.fields]
    actions = ["republish"]

    @admin.action(description="Re-publish fan-out (safe: a page already done is skipped)")
    def republish(self, request, queryset):
        count = 0
        for event in queryset.filter(status__in=["accepted", "processing"]):
            publish_fan_out_page(event_id=str(event.id), page=event.fanout_page, priority=event.priority)
            count += 1
        self.message_user(request, f"Re-published {count} event(s).")


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(LargeTableAdmin):
    list_display = ("key", "api_key", "event_id", "created_at")
    search_fields = ("=key",)
    raw_id_fields = ("api_key", "event")


@admin.register(Notification)
class NotificationAdmin(LargeTableAdmin):
    list_display = ("id", "recipient", "title", "created_at", "read_at", "archived_at")
    raw_id_fields = ("event", "recipient")
    list_select_related = ("recipient",)
    search_fields = ("=recipient__external_id",)


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    readonly_fields = ("created_at", "status_code", "duration_ms", "error", "response")


@admin.register(Delivery)
class DeliveryAdmin(LargeTableAdmin):
    list_display = ("id", "notification_id", "channel", "status", "reason", "attempts", "updated_at")
    list_filter = ("channel", "status")
    raw_id_fields = ("notification",)
    inlines = [AttemptInline]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(LargeTableAdmin):
    list_display = ("id", "delivery_id", "status_code", "duration_ms", "created_at")
    raw_id_fields = ("delivery",)
