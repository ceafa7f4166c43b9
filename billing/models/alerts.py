from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class BalanceAlert(models.Model):
    """A user's low-balance alert: one message each time the posted balance falls below
    ``threshold_micros`` (not one per request while it stays below).

    The crossing is detected by a database trigger on the wallet (migration 0007), so the
    outbox row is written in the very transaction that moved the money, by any code path.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="balance_alert")
    threshold_micros = models.BigIntegerField()
    email = models.BooleanField(default=True)
    webhook_url = models.URLField(blank=True)
    # Signs webhook bodies (HMAC-SHA256) so the receiver can tell they come from us.
    webhook_secret = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(threshold_micros__gt=0),
                                              name="billing_alert_threshold_positive")]

    def __str__(self) -> str:
        return f"low-balance alert of {self.user}"


class OutboxMessage(models.Model):
    """Something to tell the outside world, written in the transaction that caused it and
    delivered later by ``billing.tasks.outbox_drain`` with retries and backoff."""

    kind = models.CharField(max_length=32)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    # A delivery in progress holds this lease; a drainer that died lets it lapse.
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [models.Index(fields=["next_attempt_at"], condition=Q(delivered_at=None),
                                name="billing_outbox_due")]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id} ({'sent' if self.delivered_at else 'queued'})"
