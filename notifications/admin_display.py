"""Pieces the admin pages share: read-only records, short ids with a copy
button, links to filtered lists and counts by status."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

ADMIN_MEDIA = {
    "css": {"all": ("clarion/admin/admin.css",)},
    "js": ("clarion/admin/copy.js",),
}


class LargeTableAdmin(admin.ModelAdmin):
    """Tables that grow to millions of rows: no exact counts, ids not dropdowns."""

    show_full_result_count = False
    list_per_page = 50

    class Media:
        css = ADMIN_MEDIA["css"]
        js = ADMIN_MEDIA["js"]


class RecordAdmin(LargeTableAdmin):
    """Rows the pipeline writes (events, notifications, deliveries, attempts):
    the admin shows them and runs the operator's actions, never edits them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def short_id(value: object) -> str:
    """The first 8 characters of an id, the whole id in a tooltip and a copy button."""
    if value is None or value == "":
        return "-"
    full = str(value)
    return format_html(
        '<span class="clarion-id"><code title="{}">{}</code>'
        '<button type="button" class="clarion-copy" data-copy="{}"'
        ' title="Copy {}" aria-label="Copy id">copy</button></span>',
        full,
        full[:8] + ("…" if len(full) > 8 else ""),
        full,
        full,
    )


def changelist_link(model: str, label: str, **filters: object) -> str:
    """A link to the admin list of `model` ("notifications_delivery") filtered by `filters`."""
    url = reverse(f"admin:{model}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(filters), label)


def change_link(model: str, pk: object, label: object) -> str:
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{model}_change", args=[pk]), label)


def status_counts(
    counts: Iterable[tuple[str, int]], *, model: str, field: str, **filters: object
) -> str:
    """`status: n` chips, each linking to the list of those rows."""
    chips = format_html_join(
        " ",
        '<a class="clarion-chip clarion-chip--{}" href="{}?{}">{}: {}</a>',
        (
            (
                status,
                reverse(f"admin:{model}_changelist"),
                urlencode({**filters, field: status}),
                status,
                count,
            )
            for status, count in counts
        ),
    )
    return chips or "none"
