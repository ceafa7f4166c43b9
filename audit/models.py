from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone


class AuditEntry(models.Model):
    """One change a staff member (or the ``router`` command) made to money, prices, workers,
    API keys or users: who, when, from where, to what, and the fields before and after.

    Append-only: the database refuses UPDATE and DELETE on this table (migration 0002), so
    the trail cannot be rewritten by the people it records. Written only by
    ``audit.services.audit_record``, in the transaction of the change it describes.
    """

    created_at = models.DateTimeField(default=timezone.now)
    # PROTECT, as the ledger's created_by: a staff member who changed something is
    # deactivated, not deleted, and their rows keep pointing at them.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True,
                              blank=True, related_name="+", verbose_name="staff user")
    # The email at the time (a later change of address does not rewrite history), or "cli".
    actor_label = models.CharField("actor", max_length=254)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=100, help_text='e.g. "proxy.worker"')
    object_id = models.CharField(max_length=64)
    object_label = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["created_at"]),
            # An object's history: the admin's "=object_id" search within a type.
            models.Index(fields=["object_type", "object_id"]),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(actor_label="") & ~Q(action=""),
                                   name="audit_entry_names_actor_and_action"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_label} by {self.actor_label}"
