from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import cost_micros


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
    max_output_tokens = models.PositiveIntegerField(default=4096)
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
                   | Q(cached_input_usd_per_mtok__gte=0)),
                name="billing_price_not_negative",
            ),
            models.CheckConstraint(condition=Q(max_output_tokens__gte=1),
                                   name="billing_price_max_output_positive"),
        ]

    def __str__(self) -> str:
        return (f"{self.model}: ${self.input_usd_per_mtok} in / ${self.output_usd_per_mtok} out "
                f"per 1M tokens")

    @property
    def cached_price(self) -> Decimal:
        if self.cached_input_usd_per_mtok is None:
            return self.input_usd_per_mtok
        return self.cached_input_usd_per_mtok

    def cost_micros(self, *, prompt_tokens: int, completion_tokens: int,
                    cached_tokens: int = 0) -> int:
        return cost_micros(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cached_tokens=cached_tokens, input_price=self.input_usd_per_mtok,
            output_price=self.output_usd_per_mtok, cached_input_price=self.cached_price,
        )
