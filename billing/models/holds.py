from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class Hold(models.Model):
    """Money reserved for one request while it runs; its id is the request id."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        POSTED = "posted", "Posted"
        VOIDED = "voided", "Voided"
        EXPIRED = "expired", "Expired"

    id = models.CharField(primary_key=True, max_length=64)
    wallet = models.ForeignKey("billing.Wallet", on_delete=models.PROTECT, related_name="holds")
    # No single-column indexes on these: every hold is written on the request path, and
    # nothing looks holds up by key or price (deleting either is refused anyway).
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, null=True,
                                blank=True, related_name="+", db_index=False)
    price = models.ForeignKey("billing.ModelPrice", on_delete=models.PROTECT,
                              related_name="+", db_index=False)
    model = models.CharField(max_length=200)
    amount_micros = models.BigIntegerField()
    charged_micros = models.BigIntegerField(default=0)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The sweeper's query: pending holds past their expiry.
            models.Index(fields=["expires_at"], condition=Q(status="pending"),
                         name="billing_hold_pending_expiry"),
            # The admin's list, newest first (billing.keyset). Written on insert and again on
            # the settling UPDATE (which changes ``status``, a column of the index above, so
            # it is never a HOT update).
            models.Index(fields=["-created_at", "-id"], name="billing_hold_created"),
            # The admin's "Expired" filter: holds the sweeper resolved are few, and read
            # newest first through the index above the filter walked every hold (0.5 s at
            # ten million). Written only for the holds that expire.
            models.Index(fields=["-created_at", "-id"], condition=Q(status="expired"),
                         name="billing_hold_expired"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount_micros__gt=0),
                                   name="billing_hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(charged_micros__gte=0, charged_micros__lte=F("amount_micros")),
                name="billing_hold_charge_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(status="posted") | Q(charged_micros=0),
                name="billing_hold_only_posted_charges",
            ),
            models.CheckConstraint(
                condition=Q(status="pending", resolved_at__isnull=True)
                | (~Q(status="pending") & Q(resolved_at__isnull=False)),
                name="billing_hold_resolved_iff_not_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"hold {self.id} ({self.status})"
