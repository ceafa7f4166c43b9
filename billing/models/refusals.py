from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.models.usage import Endpoint


class RefusedRequests(models.Model):
    """Requests refused before any hold was taken, for money (402) or a limit (429): no usage
    record, no charge. So that a user whose integration broke can see why, they are counted
    per key, minute, model, endpoint and reason, with the last refusal's message.

    A refusal writes no row of its own: the request path counts it in memory and writes its
    counts in one statement every few seconds (``proxy.money.refusals``), so a client
    hammering an empty wallet costs the database one upsert per key and minute, not one
    INSERT per request."""

    Endpoint = Endpoint

    class Reason(models.TextChoices):
        BALANCE = "balance", "Insufficient balance"
        KEY_CAP = "key_cap", "The key's spend cap"
        MEMBER_BUDGET = "member_budget", "Your budget in the organization"
        RATE_LIMIT = "rate_limit", "Rate limit"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="refused_requests", db_index=False)
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE,
                                related_name="refused_requests", db_index=False)
    minute = models.DateTimeField(help_text="The minute (UTC) the requests were refused in.")
    # The two statuses the CHECK below allows, said as choices: the admin's filter lists
    # them, where without choices it read every row for their distinct values.
    status = models.PositiveSmallIntegerField(choices=[(402, "402 insufficient funds"),
                                                       (429, "429 rate limited")])
    reason = models.CharField(max_length=16, choices=Reason.choices)
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=16, choices=Endpoint.choices, default=Endpoint.CHAT)
    count = models.PositiveIntegerField()
    # The last refusal of the group, as its client was told.
    message = models.TextField()
    last_request_id = models.CharField(max_length=64)

    class Meta:
        ordering = ["-minute"]
        # A user's, newest first (the usage page and /api/usage/refused), and by model: their
        # order in full, so a filter that matches nothing reads nothing (by the global
        # index below, a model the user was never refused for read every refusal: 22 ms
        # at 100,000 groups).
        indexes = [models.Index(fields=["user", "-minute", "-id"], name="billing_refusal_user"),
                   models.Index(fields=["user", "model", "-minute", "-id"],
                                name="billing_refusal_user_model"),
                   # The admin's list of everyone's, newest first (billing.keyset). Refusals
                   # are written in batches (one upsert per key and minute), not per request.
                   models.Index(fields=["-minute", "-id"], name="billing_refusal_minute")]
        constraints = [
            models.UniqueConstraint(fields=["api_key", "minute", "status", "reason", "model",
                                            "endpoint"], name="billing_refusal_one_group"),
            models.CheckConstraint(condition=Q(status__in=(402, 429)),
                                   name="billing_refusal_status_known"),
            models.CheckConstraint(condition=Q(count__gte=1), name="billing_refusal_counted"),
            models.CheckConstraint(condition=Q(endpoint__in=Endpoint.values),
                                   name="billing_refusal_endpoint_known"),
        ]
        verbose_name = "refused requests"
        verbose_name_plural = "refused requests"

    def __str__(self) -> str:
        return f"{self.count} x {self.status} {self.model} at {self.minute:%Y-%m-%d %H:%M}"
