import json

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from common.errors import ClarionError, InvalidInput
from notifications.admin_display import (
    ADMIN_MEDIA,
    LargeTableAdmin,
    ReadOnlyInline,
    RecordAdmin,
    change_link,
    changelist_link,
    short_id,
    status_counts,
)
from notifications.admin_forms import NotificationTypeForm, RecipientForm
from notifications.admin_history import template_history
from notifications.admin_widgets import template_names_used
from notifications.api.auth import api_key_create
from notifications.models import (
    ApiKey,
    Delivery,
    Event,
    IdempotencyKey,
    Notification,
    NotificationType,
    PushToken,
    Recipient,
    Subscription,
    SweepRun,
    Topic,
    WebPushSubscription,
)
from notifications.publish import publish_fan_out_page
from notifications.selectors import notification_type_cache_clear
from notifications.services.events import event_accept
from notifications.services.template_restore import notification_type_template_restore
from preferences.services import preferences_put
from templates_app.preview import template_names_missing, template_preview
from templates_app.services import template_versions_record

# How many of a recipient's (or an event's) newest rows its page lists.
RECENT_ROWS = 20


def problems_text(error: ClarionError) -> str:
    """An error's fields at fault and their messages, for an admin message."""
    if not error.errors:
        return error.detail
    return "; ".join(f"{field}: {' '.join(found)}" for field, found in error.errors.items())


def delivery_status_chips(**filters: object) -> str:
    """Deliveries matching `filters` (admin changelist lookups, which are also
    ORM lookups) counted by status, as chips linking to each status's list."""
    counts = (
        Delivery.objects.filter(**{key.removesuffix("__exact"): v for key, v in filters.items()})
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by("status")
    )
    return status_counts(counts, model="notifications_delivery", field="status__exact", **filters)


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


class PushTokenInline(ReadOnlyInline):
    model = PushToken
    fields = ("platform", "token_start", "created_at", "last_seen_at")
    readonly_fields = fields
    show_change_link = False

    @admin.display(description="token")
    def token_start(self, obj: PushToken) -> str:
        return short_id(obj.token)


class WebPushInline(ReadOnlyInline):
    model = WebPushSubscription
    fields = ("endpoint", "user_agent", "created_at", "last_seen_at")
    readonly_fields = fields
    show_change_link = False
    verbose_name = "web push subscription"


@admin.register(Recipient)
class RecipientAdmin(LargeTableAdmin):
    form = RecipientForm
    list_display = ("external_id", "email", "phone", "locale", "timezone", "created_at")
    search_fields = ("=external_id", "email")
    raw_id_fields = ("user",)
    readonly_fields = ("recent_notifications",)
    inlines = [PushTokenInline, WebPushInline]
    profile = ("external_id", "email", "phone", "locale", "timezone", "data", "user")

    class Media:
        css = ADMIN_MEDIA["css"]
        js = (*ADMIN_MEDIA["js"], "clarion/admin/pref_grid.js")

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": self.profile})]
        return [
            (None, {"fields": self.profile}),
            (
                "Preferences",
                {
                    "fields": ("preferences", ("pref_quiet_start", "pref_quiet_end"), "pref_caps"),
                    "description": "A cell cycles on → off → as inherited. Saved through the "
                    "preferences service, which checks it as the API does.",
                },
            ),
            ("Recent notifications", {"fields": ("recent_notifications",)}),
        ]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # preferences_put also copies the recipient's time zone, which quiet hours are read in.
        if form.preferences_document is not None and (
            form.preferences_changed() or "timezone" in form.changed_data
        ):
            preferences_put(recipient_id=form.instance.pk, body=form.preferences_document)

    @admin.display(description="Newest notifications")
    def recent_notifications(self, obj: Recipient) -> str:
        if obj.pk is None:
            return "-"
        rows = Notification.objects.filter(recipient_id=obj.pk).order_by("-id")[:RECENT_ROWS]
        items = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    change_link("notifications_notification", n.pk, n.pk),
                    n.title,
                    n.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    "read" if n.read_at else "unread",
                    short_id(n.event_id),
                )
                for n in rows
            ),
        )
        return format_html(
            '<table class="clarion-table"><thead><tr><th>id</th><th>title</th><th>created</th>'
            "<th>state</th><th>event</th></tr></thead><tbody>{}</tbody></table>{}",
            items or mark_safe('<tr><td colspan="5">none yet</td></tr>'),  # noqa: S308 (constant)
            changelist_link(
                "notifications_notification", "All of them", recipient__id__exact=obj.pk
            ),
        )


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
    """The template workbench: templates per channel × locale with a live
    preview beside each, the rules as small forms, and the version history."""

    form = NotificationTypeForm
    list_display = ("key", "category", "priority", "channels", "retired_at", "updated_at")
    list_filter = ("category", "priority")
    search_fields = ("key",)
    actions = ["send_test"]
    change_form_template = "admin/notifications/notificationtype/type_editor.html"
    fieldsets = [
        (None, {"fields": ("key", "category", "priority", "retired_at")}),
        ("Channels", {"fields": ("channels", "required_channels")}),
        (
            "Templates",
            {
                "fields": ("default_locale", "sample_data", "templates"),
                "description": "Each locale is previewed beside its fields, against "
                "sample_data, as you type.",
            },
        ),
        ("Rules", {"fields": ("digest", "throttle", "escalation")}),
    ]

    class Media:
        css = ADMIN_MEDIA["css"]
        js = (*ADMIN_MEDIA["js"], "clarion/admin/type_editor.js")

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The saved templates' variables that sample_data lacks, shown before the live preview runs.
        missing = {}
        if obj is not None:
            sample = obj.sample_data if isinstance(obj.sample_data, dict) else {}
            missing = template_names_missing(obj.templates, sample)
            context["template_history"] = template_history(type_id=obj.pk, current=obj.templates)
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
            path(
                "<int:type_id>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="notifications_notificationtype_send_test",
            ),
            path(
                "<int:type_id>/restore/<int:version_id>/",
                self.admin_site.admin_view(self.restore_view),
                name="notifications_notificationtype_restore",
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
        result = template_preview(
            templates=templates,
            sample_data=sample,
            locale=request.POST.get("locale") or "",
            default_locale=request.POST.get("default_locale") or "en",
        )
        return JsonResponse({**result, "used": template_names_used(templates)})

    def restore_view(self, request, type_id: int, version_id: int):
        """Make an earlier version current again (a new version, checked like any edit)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise Http404
        try:
            version = notification_type_template_restore(type_id=type_id, version_id=version_id)
        except InvalidInput as error:
            self.message_user(request, f"Not restored: {problems_text(error)}", messages.ERROR)
        except ClarionError as error:  # NotFound: no such version of this type
            raise Http404(error.detail) from error
        else:
            self.message_user(
                request,
                f"Restored {version.channel}/{version.locale}: it is now version"
                f" {version.version}.",
            )
        return redirect(reverse("admin:notifications_notificationtype_change", args=[type_id]))

    @admin.action(description="Send a test to a recipient (uses the type's sample data)")
    def send_test(self, request, queryset):
        external_id = request.POST.get("recipient")
        if not external_id:
            return self.send_test_form(request, queryset, as_action=True)
        self.send_tests(request, queryset, external_id)
        return None

    def send_test_view(self, request, type_id: int):
        """The type page's "Send a test to…": the same form and events as the action."""
        if not self.has_change_permission(request):
            raise Http404
        types = NotificationType.objects.filter(pk=type_id)
        if not types:
            raise Http404("No such notification type")
        external_id = request.POST.get("recipient") if request.method == "POST" else None
        if not external_id:
            return self.send_test_form(request, types, as_action=False)
        self.send_tests(request, types, external_id)
        return redirect(reverse("admin:notifications_notificationtype_change", args=[type_id]))

    def send_test_form(self, request, types, *, as_action: bool):
        return render(
            request,
            "admin/notifications/notificationtype/send_test.html",
            {
                **self.admin_site.each_context(request),
                "types": types,
                "opts": self.model._meta,
                "as_action": as_action,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def send_tests(self, request, types, external_id: str) -> None:
        """One event per type, to `external_id`, with the type's sample data;
        accepted like a producer's, so it goes through the whole pipeline."""
        sent = []
        for notification_type in types:
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
                    f"No test of {notification_type.key} sent: {problems_text(error)}",
                    messages.ERROR,
                )
        if sent:
            self.message_user(
                request, f"Sent {len(sent)} test event(s) to {external_id}: {', '.join(sent)}"
            )


@admin.register(Event)
class EventAdmin(RecordAdmin):
    list_display = (
        "short_event_id",
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
    readonly_fields = [
        "notifications_by_state",
        "deliveries_by_status",
        "newest_deliveries",
        *(f.name for f in Event._meta.fields),
    ]
    fieldsets = [
        (None, {"fields": [f.name for f in Event._meta.fields]}),
        (
            "What it produced",
            {"fields": ("notifications_by_state", "deliveries_by_status", "newest_deliveries")},
        ),
    ]
    actions = ["republish"]

    @admin.display(description="id", ordering="id")
    def short_event_id(self, obj: Event) -> str:
        return format_html(
            "{} {}", change_link("notifications_event", obj.pk, "open"), short_id(obj.pk)
        )

    @admin.display(description="Notifications")
    def notifications_by_state(self, obj: Event) -> str:
        counts = Notification.objects.filter(event_id=obj.pk).aggregate(
            total=Count("id"),
            unread=Count("id", filter=Q(read_at__isnull=True, visible=True)),
            read=Count("id", filter=Q(read_at__isnull=False)),
            hidden=Count("id", filter=Q(visible=False)),
        )
        return format_html(
            "{} · unread {} · read {} · not in the inbox {}",
            changelist_link(
                "notifications_notification", f"{counts['total']} in all", event__id__exact=obj.pk
            ),
            counts["unread"],
            counts["read"],
            counts["hidden"],
        )

    @admin.display(description="Deliveries by status")
    def deliveries_by_status(self, obj: Event) -> str:
        return format_html(
            "{} {}",
            delivery_status_chips(notification__event__id__exact=obj.pk),
            changelist_link(
                "notifications_delivery", "all deliveries", notification__event__id__exact=obj.pk
            ),
        )

    @admin.display(description="Newest deliveries")
    def newest_deliveries(self, obj: Event) -> str:
        rows = (
            Delivery.objects.filter(notification__event_id=obj.pk)
            .select_related("notification__recipient")
            .order_by("-id")[:RECENT_ROWS]
        )
        items = format_html_join(
            "",
            '<tr><td>{}</td><td>{}</td><td>{}</td><td><span class="clarion-chip'
            ' clarion-chip--{}">{}</span></td><td>{}</td><td>{}</td></tr>',
            (
                (
                    change_link("notifications_delivery", d.pk, d.pk),
                    d.notification.recipient.external_id,
                    d.channel,
                    d.status,
                    d.status,
                    d.reason or "",
                    d.attempts,
                )
                for d in rows
            ),
        )
        return format_html(
            '<table class="clarion-table"><thead><tr><th>id</th><th>recipient</th>'
            "<th>channel</th><th>status</th><th>reason</th><th>attempts</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            items or mark_safe('<tr><td colspan="6">none</td></tr>'),  # noqa: S308 (constant)
        )

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
class NotificationAdmin(RecordAdmin):
    list_display = (
        "id",
        "recipient",
        "title",
        "event_short_id",
        "created_at",
        "read_at",
        "archived_at",
    )
    raw_id_fields = ("event", "recipient")
    list_select_related = ("recipient",)
    search_fields = ("=recipient__external_id",)
    readonly_fields = ["event_short_id", "its_deliveries"]

    @admin.display(description="event")
    def event_short_id(self, obj: Notification) -> str:
        return format_html(
            "{} {}",
            change_link("notifications_event", obj.event_id, "open"),
            short_id(obj.event_id),
        )

    @admin.display(description="Deliveries")
    def its_deliveries(self, obj: Notification) -> str:
        return delivery_status_chips(notification__id__exact=obj.pk)


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
