"""The audit trail in the admin: read-only, filtered by actor, object type, action and date,
searched by the changed object's label (or its exact id)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from audit.models import AuditEntry


def _json(value: dict[str, Any] | None) -> str:
    if value is None:
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True,
                                                   ensure_ascii=False))


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_label", "ip", "action", "object_type", "object_label",
                    "changes", "reason")
    list_filter = (("actor_label", admin.AllValuesFieldListFilter),
                   ("object_type", admin.AllValuesFieldListFilter),
                   ("action", admin.AllValuesFieldListFilter),
                   "created_at")
    date_hierarchy = "created_at"
    search_fields = ("object_label", "=object_id")
    list_select_related = ("actor",)
    fields = ("created_at", "actor_label", "actor", "ip", "action", "object_type", "object_id",
              "object_label", "reason", "before_fields", "after_fields")
    readonly_fields = ("before_fields", "after_fields")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the database refuses it anyway (migration 0002)

    @admin.display(description="Changes")
    def changes(self, obj: AuditEntry) -> str:
        before, after = obj.before or {}, obj.after or {}
        parts = [f"{key}: {before.get(key, '-')} → {after.get(key, '-')}"
                 for key in dict.fromkeys([*before, *after])]
        return Truncator("; ".join(parts)).chars(120)

    @admin.display(description="Before")
    def before_fields(self, obj: AuditEntry) -> str:
        return _json(obj.before)

    @admin.display(description="After")
    def after_fields(self, obj: AuditEntry) -> str:
        return _json(obj.after)
