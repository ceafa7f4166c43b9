"""Staff views of upstream workers. The upstream key is write-only: typed in, stored
encrypted, never shown back (not even encrypted). Every save clears this process's lookup
caches, so the router uses the change at once here and within the lookup TTL elsewhere."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.forms import BaseFormSet, ModelForm
from django.http import HttpRequest

from proxy.forms import WorkerAdminForm, WorkerModelInlineForm, WorkerModelInlineFormSet
from proxy.models import Worker, WorkerModel
from proxy.services import WorkerError, worker_set_enabled, workers_changed


class WorkerModelInline(admin.TabularInline):
    model = WorkerModel
    form = WorkerModelInlineForm
    formset = WorkerModelInlineFormSet
    fields = ("model", "upstream_model")
    extra = 1
    verbose_name = "served model"
    verbose_name_plural = "served models"


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    form = WorkerAdminForm
    inlines = (WorkerModelInline,)
    list_display = ("name", "kind", "enabled", "priority", "weight", "max_concurrency",
                    "base_url", "key_set", "served_models")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "models__model")
    ordering = ("-priority", "name")
    actions = ("enable_workers", "disable_workers")
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "api_key", "clear_api_key",
                           "enabled")}),
        ("Routing", {"fields": ("priority", "weight", "max_concurrency")}),
        ("Timeouts (seconds)", {"fields": ("connect_timeout_s", "first_byte_timeout_s",
                                           "total_timeout_s"), "classes": ("collapse",)}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Worker | None = None) -> Any:
        if obj is not None:
            return self.fieldsets
        # Adding: there is no stored key to remove.
        (name, options), *rest = self.fieldsets
        fields = tuple(f for f in options["fields"] if f != "clear_api_key")
        return ((name, {**options, "fields": fields}), *rest)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return super().get_queryset(request).prefetch_related("models")

    @admin.display(description="Key set", boolean=True)
    def key_set(self, obj: Worker) -> bool:
        return obj.has_api_key

    @admin.display(description="Models")
    def served_models(self, obj: Worker) -> str:
        return ", ".join(sorted(
            row.model if not row.upstream_model else f"{row.model} → {row.upstream_model}"
            for row in obj.models.all()
        )) or "-"

    # The inlines are saved after the worker, all in the admin's transaction; the caches are
    # cleared again when it commits (see workers_changed).
    def save_related(self, request: HttpRequest, form: ModelForm,
                     formsets: list[BaseFormSet], change: bool) -> None:
        super().save_related(request, form, formsets, change)
        workers_changed()

    def delete_model(self, request: HttpRequest, obj: Worker) -> None:
        super().delete_model(request, obj)
        workers_changed()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        super().delete_queryset(request, queryset)
        workers_changed()

    @admin.action(description="Enable the selected workers", permissions=["change"])
    def enable_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable the selected workers", permissions=["change"])
    def disable_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Worker], *,
                     enabled: bool) -> None:
        names = list(queryset.order_by("name").values_list("name", flat=True))
        try:
            with transaction.atomic():
                for name in names:
                    worker_set_enabled(name=name, enabled=enabled)
        except WorkerError as exc:  # e.g. deleted meanwhile by someone else
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{'Enabled' if enabled else 'Disabled'} "
                          f"{len(names)} worker{'s' if len(names) != 1 else ''}.",
                          messages.SUCCESS)
