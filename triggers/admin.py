"""Admin screens of triggers, items, reminders and broadcasts.

They are written through the API (which checks them and keeps their anchors
and schedules in step), so the admin shows them and deletes them but does
not edit them; a broadcast's schedule is paused through its Beat entry
(Periodic tasks)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from triggers.models import (
    Broadcast,
    BroadcastFire,
    Item,
    Reminder,
    ReminderFire,
    Trigger,
    TriggerAnchor,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class AnchorInline(ReadOnlyInline):
    model = TriggerAnchor
    fields = ("attributes", "key")
    verbose_name_plural = "anchors (what the sweep looks the trigger up by)"


@admin.register(Trigger)
class TriggerAdmin(ReadOnlyAdmin):
    list_display = ("recipient", "key", "kind", "type", "on_created", "on_updated", "updated_at")
    list_filter = ("kind", "on_created", "on_updated")
    list_select_related = ("recipient", "type")
    search_fields = ("=recipient__external_id", "key")
    inlines = [AnchorInline]


@admin.register(Item)
class ItemAdmin(ReadOnlyAdmin):
    list_display = ("kind", "external_id", "version", "changed_seq", "expires_at", "updated_at")
    list_filter = ("kind",)
    search_fields = ("=external_id",)


class ReminderFireInline(ReadOnlyInline):
    model = ReminderFire
    fields = ("offset_seconds", "fire_at", "fired_at", "event_id")
    ordering = ("fire_at",)


@admin.register(Reminder)
class ReminderAdmin(ReadOnlyAdmin):
    list_display = ("key", "api_key", "type", "due_at", "offsets", "updated_at")
    list_select_related = ("api_key", "type")
    search_fields = ("=key",)
    inlines = [ReminderFireInline]


class BroadcastFireInline(ReadOnlyInline):
    model = BroadcastFire
    fields = ("slot", "fired_at", "event_id")
    ordering = ("-slot",)


@admin.register(Broadcast)
class BroadcastAdmin(ReadOnlyAdmin):
    list_display = ("key", "api_key", "cron", "timezone", "beat_entry", "updated_at")
    search_fields = ("=key",)
    inlines = [BroadcastFireInline]

    @admin.display(description="Beat entry")
    def beat_entry(self, broadcast: Broadcast) -> str:
        if not broadcast.periodic_task_id:
            return "-"
        url = reverse(
            "admin:django_celery_beat_periodictask_change", args=[broadcast.periodic_task_id]
        )
        return format_html('<a href="{}">{}</a>', url, "enabled / paused here")
