from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class UsageRecord(models.Model):
    """What one request used and cost. Written once, when its hold is resolved."""

    class Source(models.TextChoices):
        PROVIDER = "provider", "Reported by the upstream"
        ESTIMATED = "estimated", "Counted by the router"

    class Status(models.TextChoices):
        OK = "ok", "Completed"
        CANCELLED = "cancelled", "Client disconnected"
        UPSTREAM_ERROR = "upstream_error", "Upstream failed"
        EXPIRED = "expired", "Expired unsettled"

    request_id = models.CharField(max_length=64, unique=True)
    # Indexed by (user, -created_at) and (api_key, -created_at) below; one row is written per
    # request, so no index is kept that those two do not already serve.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                             related_name="usage_records", db_index=False)
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, null=True,
                                blank=True, related_name="usage_records", db_index=False)
    model = models.CharField(max_length=200)
    worker = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    price = models.ForeignKey("billing.ModelPrice", on_delete=models.PROTECT, related_name="+",
                              db_index=False)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PROVIDER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["api_key", "-created_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost_micros__gte=0),
                                   name="billing_usage_cost_not_negative"),
            models.CheckConstraint(condition=Q(cached_tokens__lte=F("prompt_tokens")),
                                   name="billing_usage_cached_within_prompt"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.cost_micros}µ$"
