from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import cost_micros

# Anthropic bills a write to its (5-minute) prompt cache at 1.25x the input price; a price
# that names no cache-write price charges that.
CACHE_WRITE_FACTOR = Decimal("1.25")


class ModelKind(models.TextChoices):
    """What a model is called for: chat-like endpoints (chat, responses, messages,
    completions), embeddings, or both. Outside ``ModelPrice`` so its constraint can name it."""

    CHAT = "chat", "Chat (chat, responses, messages, completions)"
    EMBEDDING = "embedding", "Embeddings"
    BOTH = "both", "Chat and embeddings"


class ModelPrice(models.Model):
    """The price of a model from ``effective_from`` on, in USD per 1M tokens.

    Prices are versioned, never edited in place once used: a usage record points at the
    version it was charged at, so a new price is a new row.
    """

    model = models.CharField(max_length=200)
    input_usd_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    output_usd_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_usd_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True,
        help_text="Price of prompt tokens served from the upstream's cache; empty means the "
        "input price.",
    )
    cache_write_usd_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True,
        help_text="Price of prompt tokens written to the upstream's cache (Anthropic's "
        "cache_creation_input_tokens); empty means 1.25x the input price, as Anthropic bills "
        "its 5-minute cache.",
    )
    kind = models.CharField(max_length=16, choices=ModelKind.choices, default=ModelKind.CHAT,
                            help_text="Which endpoints may call the model: a chat model is "
                            "refused on /v1/embeddings and an embedding model on the others.")
    max_output_tokens = models.PositiveIntegerField(default=4096)
    context_length = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="The model's context window in tokens, shown in /v1/models; empty: unknown.")
    effective_from = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"],
                                    name="billing_price_one_version_per_instant"),
            models.CheckConstraint(
                condition=Q(input_usd_per_mtok__gte=0, output_usd_per_mtok__gte=0)
                & (Q(cached_input_usd_per_mtok__isnull=True)
                   | Q(cached_input_usd_per_mtok__gte=0))
                & (Q(cache_write_usd_per_mtok__isnull=True)
                   | Q(cache_write_usd_per_mtok__gte=0)),
                name="billing_price_not_negative",
            ),
            models.CheckConstraint(condition=Q(max_output_tokens__gte=1),
                                   name="billing_price_max_output_positive"),
            models.CheckConstraint(condition=Q(kind__in=ModelKind.values),
                                   name="billing_price_kind_known"),
        ]

    def __str__(self) -> str:
        return (f"{self.model}: ${self.input_usd_per_mtok} in / ${self.output_usd_per_mtok} out "
                f"per 1M tokens")

    @property
    def cached_price(self) -> Decimal:
        if self.cached_input_usd_per_mtok is None:
            return self.input_usd_per_mtok
        return self.cached_input_usd_per_mtok

    @property
    def cache_write_price(self) -> Decimal:
        if self.cache_write_usd_per_mtok is None:
            return self.input_usd_per_mtok * CACHE_WRITE_FACTOR
        return self.cache_write_usd_per_mtok

    def serves(self, kind: str) -> bool:
        """Whether the model may be called for ``kind`` (chat or embedding)."""
        return self.kind == ModelKind.BOTH or self.kind == kind

    def cost_micros(self, *, prompt_tokens: int, completion_tokens: int,
                    cached_tokens: int = 0, cache_write_tokens: int = 0) -> int:
        return cost_micros(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cached_tokens=cached_tokens, input_price=self.input_usd_per_mtok,
            output_price=self.output_usd_per_mtok, cached_input_price=self.cached_price,
            cache_write_tokens=cache_write_tokens,
            cache_write_price=self.cache_write_price if cache_write_tokens else None,
        )
