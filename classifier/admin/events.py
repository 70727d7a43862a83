"""Admin for the lifecycle audit log: read only, append only."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.safestring import SafeString

from classifier.models import LifecycleEvent

from .display import admin_change_link


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "from_link", "to_link", "by", "run_link", "reason")
    list_filter = ("action",)
    list_select_related = ("from_version", "to_version", "by")
    search_fields = ("reason", "by__username")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LifecycleEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LifecycleEvent | None = None) -> bool:
        return False  # an audit log is append-only

    @admin.display(description="from")
    def from_link(self, obj: LifecycleEvent) -> SafeString | None:
        return admin_change_link(obj.from_version, obj.from_version.label) if obj.from_version else None

    @admin.display(description="to")
    def to_link(self, obj: LifecycleEvent) -> SafeString | None:
        return admin_change_link(obj.to_version, obj.to_version.label) if obj.to_version else None

    @admin.display(description="run")
    def run_link(self, obj: LifecycleEvent) -> str | None:
        return None if obj.run_id is None else f"run {obj.run_id}"
