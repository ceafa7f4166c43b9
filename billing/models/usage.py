from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

# Estimate reasons that say the upstream misbehaved (the others are a client leaving, an
# answer cut at its cap, which ``over_cap`` flags, or a failure of ours).
BAD_USAGE_REASONS = ("no_usage", "malformed", "prompt_implausible", "completion_above_cap",
                     "completion_below_output")


class Endpoint(models.TextChoices):
    """The API a request came in through (its dialect), as the client called it."""

    CHAT = "chat", "/v1/chat/completions"
    RESPONSES = "responses", "/v1/responses"
    MESSAGES = "messages", "/v1/messages"
    EMBEDDINGS = "embeddings", "/v1/embeddings"
    COMPLETIONS = "completions", "/v1/completions"


class UsageRecord(models.Model):
    """What one request used and cost. Written once, when its hold is resolved."""

    Endpoint = Endpoint

    class Source(models.TextChoices):
        PROVIDER = "provider", "Reported by the upstream"
        ESTIMATED = "estimated", "Counted by the router"

    class Status(models.TextChoices):
        OK = "ok", "Completed"
        CANCELLED = "cancelled", "Client disconnected"
        UPSTREAM_ERROR = "upstream_error", "Upstream failed"
        EXPIRED = "expired", "Expired unsettled"

    class EstimateReason(models.TextChoices):
        """Why the router charged its own count instead of the upstream's usage."""

        NONE = "", "Upstream's usage"
        INCOMPLETE = "incomplete", "Answer did not finish"
        NO_USAGE = "no_usage", "No usage reported"
        MALFORMED = "malformed", "Usage malformed"
        PROMPT_IMPLAUSIBLE = "prompt_implausible", "Prompt count implausible"
        COMPLETION_ABOVE_CAP = "completion_above_cap", "Output count above the cap"
        COMPLETION_BELOW_OUTPUT = "completion_below_output", "Output count below delivered"
        SETTLE_ERROR = "settle_error", "Charge could not be computed or written"

    request_id = models.CharField(max_length=64, unique=True)
    # Indexed by the lists that read them (see Meta.indexes); one row is written per request,
    # so no index is kept that a page does not need.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                             related_name="usage_records", db_index=False)
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, null=True,
                                blank=True, related_name="usage_records", db_index=False)
    # The organization whose wallet paid (NULL: the user's own); ``user`` is then the
    # member who owns the key.
    organization = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT,
                                     null=True, blank=True, related_name="usage_records",
                                     db_index=False)
    model = models.CharField(max_length=200)
    worker = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    # Prompt tokens the upstream wrote to its cache (Anthropic), charged at the price's
    # cache-write rate; like cached_tokens, a part of prompt_tokens.
    cache_write_tokens = models.PositiveIntegerField(default=0)
    endpoint = models.CharField(max_length=16, choices=Endpoint.choices, default=Endpoint.CHAT)
    cost_micros = models.BigIntegerField(default=0)
    # What the upstream charges us for the same tokens, at the worker's cost price in force
    # (proxy.UpstreamCost), rounded the same way; NULL when the worker has no cost price:
    # unknown is never shown as zero.
    upstream_cost_micros = models.BigIntegerField(null=True, blank=True)
    price = models.ForeignKey("billing.ModelPrice", on_delete=models.PROTECT, related_name="+",
                              db_index=False)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PROVIDER)
    estimate_reason = models.CharField(max_length=24, choices=EstimateReason.choices,
                                       blank=True, default="")
    # The upstream sent more output than the request's cap allows: the router cut it there.
    over_cap = models.BooleanField(default=False)
    # The usage charged cost more than the hold: the hold was charged (an upstream reporting
    # a prompt past the router's bound, within the factor it believes).
    over_hold = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        # Every list reads newest first, ties broken by id (billing.keyset): each index ends
        # in (-created_at, -id), so a page is a range read of one index whatever its depth.
        # Seven are written per request (the primary key and request_id's two included): one
        # more than before the keyset pages, the (user, model) one.
        indexes = [
            # The admin's list of every request, and the roll-up job's time ranges.
            models.Index(fields=["-created_at", "-id"], name="billing_usage_created"),
            # A user's requests (portal, API, the user's admin page).
            models.Index(fields=["user", "-created_at", "-id"], name="billing_usage_user"),
            # The same narrowed to a model: without it a rare model's page reads the user's
            # whole history to find 25 rows.
            models.Index(fields=["user", "model", "-created_at", "-id"],
                         name="billing_usage_user_model"),
            models.Index(fields=["api_key", "-created_at", "-id"], name="billing_usage_key"),
            # An organization's pages; personal records (most) are left out of it.
            models.Index(fields=["organization", "-created_at", "-id"], name="billing_usage_org",
                         condition=Q(organization__isnull=False)),
            # The few records that flag a misbehaving upstream, per worker, for the admin.
            models.Index(fields=["worker", "-created_at"], name="billing_usage_flagged",
                         condition=Q(over_cap=True) | Q(over_hold=True)
                         | Q(estimate_reason__in=BAD_USAGE_REASONS)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost_micros__gte=0),
                                   name="billing_usage_cost_not_negative"),
            models.CheckConstraint(condition=Q(upstream_cost_micros__isnull=True)
                                   | Q(upstream_cost_micros__gte=0),
                                   name="billing_usage_upstream_cost_not_negative"),
            models.CheckConstraint(
                condition=Q(cached_tokens__lte=F("prompt_tokens") - F("cache_write_tokens")),
                name="billing_usage_cached_within_prompt"),
            models.CheckConstraint(condition=Q(endpoint__in=Endpoint.values),
                                   name="billing_usage_endpoint_known"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.cost_micros}µ$"
