import json

from django import forms
from django.contrib import admin, messages
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from common.errors import ClarionError, InvalidInput
from notifications.api.auth import api_key_create
from notifications.models import (
    ApiKey,
    Event,
    IdempotencyKey,
    Notification,
    NotificationType,
    Recipient,
    Subscription,
    SweepRun,
    Topic,
)
from notifications.publish import publish_fan_out_page
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.types import TYPE_FIELDS, parse_type
from templates_app.models import TemplateVersion
from templates_app.preview import template_names_missing, template_preview
from templates_app.services import template_versions_record


class LargeTableAdmin(admin.ModelAdmin):
    """Tables that grow to millions of rows: no exact counts, ids not dropdowns."""

    show_full_result_count = False
    list_per_page = 50


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "rate_limit", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    fields = ("name", "prefix", "rate_limit", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = api_key_create(name=obj.name, rate_limit=obj.rate_limit)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            key.pk,
            key.prefix,
            key.key_hash,
            key.created_at,
        )
        obj.rate_limit = key.rate_limit
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


class TemplateVersionInline(admin.TabularInline):
    model = TemplateVersion
    extra = 0
    can_delete = False
    fields = ("channel", "locale", "version", "fields", "created_at")
    readonly_fields = fields
    ordering = ("channel", "locale", "-version")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class NotificationTypeForm(forms.ModelForm):
    """The admin's form checks a type by the rules `PUT /notification-types/{key}` uses."""

    class Meta:
        model = NotificationType
        fields = (
            "key",
            "category",
            "priority",
            "channels",
            "required_channels",
            "default_locale",
            "templates",
            "sample_data",
            "digest",
            "throttle",
            "escalation",
            "retired_at",
        )

    def clean(self) -> dict:
        cleaned = super().clean()
        if any(name in self.errors for name in (*TYPE_FIELDS, "key")):
            return cleaned  # a field that did not parse has its message; the rules need it whole
        body = {name: cleaned[name] for name in TYPE_FIELDS if name in cleaned}
        try:
            parse_type(cleaned.get("key", ""), body)
        except InvalidInput as error:
            for path, problems in error.errors.items():
                field = path.split(".", 1)[0]
                for problem in problems:
                    self.add_error(
                        field if field in self.fields else None,
                        problem if path == field else f"{path}: {problem}",
                    )
        return cleaned


@admin.register(NotificationType)
class NotificationTypeAdmin(admin.ModelAdmin):
    form = NotificationTypeForm
    list_display = ("key", "category", "priority", "channels", "retired_at", "updated_at")
    list_filter = ("category", "priority")
    search_fields = ("key",)
    inlines = [TemplateVersionInline]
    actions = ["send_test"]
    change_form_template = "admin/notifications/notificationtype/change_form.html"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The saved templates' variables that sample_data lacks, shown before the live preview runs.
        missing = {}
        if obj is not None:
            sample = obj.sample_data if isinstance(obj.sample_data, dict) else {}
            missing = template_names_missing(obj.templates, sample)
        context["templates_missing"] = missing
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        template_versions_record(type_id=obj.id, templates=obj.templates)
        notification_type_cache_clear()

    def get_urls(self):
        return [
            path(
                "preview/",
                self.admin_site.admin_view(self.preview_view),
                name="notifications_notificationtype_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request):
        """Render posted templates against posted sample data (the live preview)."""
        if request.method != "POST":
            return JsonResponse({"detail": "POST templates and sample_data"}, status=405)
        try:
            templates = json.loads(request.POST.get("templates") or "{}")
            sample = json.loads(request.POST.get("sample_data") or "{}")
        except ValueError as exc:
            return JsonResponse({"errors": {"json": [str(exc)]}}, status=400)
        if not isinstance(templates, dict) or not isinstance(sample, dict):
            return JsonResponse(
                {"errors": {"json": ["templates and sample_data must be objects"]}}, status=400
            )
        return JsonResponse(
            template_preview(
                templates=templates,
                sample_data=sample,
                locale=request.POST.get("locale") or "",
                default_locale=request.POST.get("default_locale") or "en",
            )
        )

    @admin.action(description="Send a test to a recipient (uses the type's sample data)")
    def send_test(self, request, queryset):
        external_id = request.POST.get("recipient")
        if not external_id:
            return render(
                request,
                "admin/notifications/notificationtype/send_test.html",
                {
                    **self.admin_site.each_context(request),
                    "types": queryset,
                    "opts": self.model._meta,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        sent = []
        for notification_type in queryset:
            body = {
                "type": notification_type.key,
                "recipients": [external_id],
                "actor": request.user.get_username(),
                "data": notification_type.sample_data or {},
            }
            try:
                sent.append(event_accept(api_key_id=None, body=body).id)
            except ClarionError as error:
                self.message_user(
                    request,
                    f"{notification_type.key}: {error.detail} {error.errors}",
                    messages.ERROR,
                )
        if sent:
            self.message_user(
                request, f"Sent {len(sent)} test event(s) to {external_id}: {', '.join(sent)}"
            )
        return None


@admin.register(Event)
class EventAdmin(LargeTableAdmin):
    list_display = (
        "id",
        "type",
        "status",
        "priority",
        "recipient_count",
        "created_at",
        "send_at",
        "finished_at",
    )
    list_filter = ("status", "priority")
    list_select_related = ("type",)
    search_fields = ("=id", "=idempotency_key")
    readonly_fields = [f.name for f in Event._meta.fields]
    actions = ["republish"]

    @admin.action(description="Re-publish fan-out (safe: a page already done is skipped)")
    def republish(self, request, queryset):
        count = 0
        for event in queryset.filter(status__in=["accepted", "processing"]):
            publish_fan_out_page(
                event_id=str(event.id), page=event.fanout_page, priority=event.priority
            )
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


@admin.register(SweepRun)
class SweepRunAdmin(LargeTableAdmin):
    """Runs of the scheduled sweeps: a record, so read-only."""

    list_display = (
        "name",
        "started_at",
        "duration_ms",
        "rows_examined",
        "events_produced",
        "status",
    )
    list_filter = ("name", "status")
    readonly_fields = [f.name for f in SweepRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
