"""The admin of the upstream's cost prices (``UpstreamCost``): versions, added and never
edited, like our own prices (billing.admin.ModelPriceAdmin)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils import timezone

from audit.actors import Actor
from audit.admin_base import AuditedAdmin
from audit.snapshots import Snapshot, snapshot
from proxy.costs import COST_AUDIT_FIELDS, cost_set
from proxy.models import UpstreamCost, WorkerModel


class UpstreamCostForm(ModelForm):
    class Meta:
        model = UpstreamCost
        fields = ("worker_model", "input_usd_per_mtok", "output_usd_per_mtok",
                  "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "effective_from")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # The service refuses a second version at the same instant; say so on the form.
        if (data.get("worker_model") and data.get("effective_from")
                and UpstreamCost.objects.filter(worker_model=data["worker_model"],
                                                effective_from=data["effective_from"]).exists()):
            raise ValidationError("This model already has a cost taking effect at that instant.")
        return data


@admin.register(UpstreamCost)
class UpstreamCostAdmin(AuditedAdmin):
    """What each worker's upstream charges us per model. A change is a new version, so the
    usage records keep the cost they were served at."""

    audit_name = "upstream_cost"
    audit_adds = False  # cost_set audits the new version against the one it replaces
    form = UpstreamCostForm
    list_display = ("worker", "model", "input_usd_per_mtok", "output_usd_per_mtok",
                    "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "effective_from",
                    "state")
    list_filter = ("worker_model__worker",)
    list_select_related = ("worker_model__worker",)
    search_fields = ("worker_model__worker__name", "worker_model__model")
    add_fields = UpstreamCostForm.Meta.fields
    view_fields = (*add_fields, "state", "created_by", "created_at")
    readonly_fields = ("state",)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest,
                                 **kwargs: Any) -> Any:
        if db_field.name == "worker_model":
            # Each choice names its worker: one query for all of them, not one per choice.
            kwargs["queryset"] = WorkerModel.objects.select_related("worker").order_by(
                "worker__name", "model")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an existing version is never edited; "add" makes the next one

    def audit_snapshot(self, obj: UpstreamCost) -> Snapshot:
        return snapshot(obj, fields=COST_AUDIT_FIELDS)

    def get_fields(self, request: HttpRequest, obj: UpstreamCost | None = None
                   ) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.view_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[UpstreamCost]:
        newer_in_force = UpstreamCost.objects.filter(
            worker_model=OuterRef("worker_model"),
            effective_from__gt=OuterRef("effective_from"), effective_from__lte=timezone.now())
        return super().get_queryset(request).annotate(superseded=Exists(newer_in_force))

    @admin.display(description="Worker", ordering="worker_model__worker__name")
    def worker(self, obj: UpstreamCost) -> str:
        return obj.worker_model.worker.name

    @admin.display(description="Model", ordering="worker_model__model")
    def model(self, obj: UpstreamCost) -> str:
        return obj.worker_model.model

    @admin.display(description="State")
    def state(self, obj: UpstreamCost) -> str:
        if obj.effective_from > timezone.now():
            return "scheduled"
        return "superseded" if getattr(obj, "superseded", False) else "in force"

    def save_model(self, request: HttpRequest, obj: UpstreamCost, form: ModelForm,
                   change: bool) -> None:
        data = form.cleaned_data
        created = cost_set(
            worker=data["worker_model"].worker, model=data["worker_model"].model,
            input=data["input_usd_per_mtok"], output=data["output_usd_per_mtok"],
            cached_input=data.get("cached_input_usd_per_mtok"),
            cache_write=data.get("cache_write_usd_per_mtok"),
            effective_from=data["effective_from"], created_by=request.user,
            actor=Actor.of_request(request))
        # The admin goes on to log and redirect to ``obj``: make it the row the service wrote.
        for field in UpstreamCost._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db

