"""An admin that audits the saves and deletes Django's own views make, for models staff edit
through a plain form rather than a service (a worker, an API key's policies, a user's
flags). Its subclasses in accounts, billing and proxy pass ``actor=`` to the services their
actions call."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import BaseFormSet, ModelForm
from django.http import HttpRequest

from audit.actors import Actor
from audit.services import AuditObject, audit_record, audit_record_each
from audit.snapshots import Snapshot, snapshot


class AuditedAdmin(admin.ModelAdmin):
    """Each add, change and delete writes one audit row named ``<audit_name>.create``,
    ``.change`` or ``.delete``, in the transaction Django's view runs the save in."""

    audit_name = ""
    # False where the add view saves through a service that records the creation itself.
    audit_adds = True

    def audit_snapshot(self, obj: models.Model) -> Snapshot:
        """The fields the trail compares; override to add related rows (a user's groups)."""
        return snapshot(obj)

    def save_model(self, request: HttpRequest, obj: models.Model, form: ModelForm,
                   change: bool) -> None:
        if change:
            # The form has already copied its values onto ``obj``: "before" is the stored row,
            # locked so that no other save lands between it and ours.
            stored = type(obj)._default_manager.select_for_update().get(pk=obj.pk)
            form._audit_before = self.audit_snapshot(stored)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: list[BaseFormSet],
                     change: bool) -> None:
        # "After" is taken here, once the inlines and many-to-many fields are saved too.
        super().save_related(request, form, formsets, change)
        if change or self.audit_adds:
            audit_record(
                actor=Actor.of_request(request),
                action=f"{self.audit_name}.{'change' if change else 'create'}",
                obj=form.instance, before=getattr(form, "_audit_before", None) if change else None,
                after=self.audit_snapshot(form.instance),
            )

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        # Taken first: deleting sets obj.pk to None. Django's delete view is one transaction.
        target, before = AuditObject.of(obj), self.audit_snapshot(obj)
        super().delete_model(request, obj)
        audit_record(actor=Actor.of_request(request), action=f"{self.audit_name}.delete",
                     obj=target, before=before, after=None)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        # The "delete selected" action opens no transaction of its own; the rows and their
        # deletion must commit together.
        with transaction.atomic(using=queryset.db):
            # Read again by id: the list's own queryset may join (a user's wallet), and a
            # row lock cannot be taken through an outer join.
            pks = list(queryset.values_list("pk", flat=True))
            stored = queryset.model._default_manager.select_for_update().filter(pk__in=pks)
            doomed = [(AuditObject.of(obj), self.audit_snapshot(obj), None) for obj in stored]
            super().delete_queryset(request, queryset)
            audit_record_each(actor=Actor.of_request(request),
                              action=f"{self.audit_name}.delete", changes=doomed)
