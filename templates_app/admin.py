from django.contrib import admin

from templates_app.models import TemplateVersion


@admin.register(TemplateVersion)
class TemplateVersionAdmin(admin.ModelAdmin):
    list_display = ("type", "channel", "locale", "version", "created_at")
    list_filter = ("channel", "locale")
    search_fields = ("type__key",)
    readonly_fields = ("type", "channel", "locale", "version", "fields", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
