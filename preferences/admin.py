from django.contrib import admin

from preferences.models import ChannelPreference, DeliverySettings


@admin.register(ChannelPreference)
class ChannelPreferenceAdmin(admin.ModelAdmin):
    list_display = ("recipient", "scope", "key", "channel", "enabled", "updated_at")
    list_filter = ("scope", "channel", "enabled")
    search_fields = ("=recipient__external_id", "key")
    raw_id_fields = ("recipient",)
    list_select_related = ("recipient",)
    show_full_result_count = False


@admin.register(DeliverySettings)
class DeliverySettingsAdmin(admin.ModelAdmin):
    list_display = ("recipient", "quiet_start", "quiet_end", "daily_caps", "updated_at")
    search_fields = ("=recipient__external_id",)
    raw_id_fields = ("recipient",)
