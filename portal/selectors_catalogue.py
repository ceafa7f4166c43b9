"""Reads for the portal's Models page and a request's own page: which models a user may
call and at what price, and what one of their requests cost, kind of token by kind."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, User
from billing.models import ModelPrice, UsageRecord
from billing.selectors import prices_current
from proxy.entry.catalogue import CHAT_ENDPOINTS, ENDPOINTS
from proxy.models import WorkerModel

# Prices have six decimals in USD per 1M tokens, which is micro-USD per token: scaled by a
# million they are whole pico-USD per token, so the estimator can count in integers.
PICO_PER_MICRO = 10**6


@dataclass(frozen=True)
class CatalogueModel:
    price: ModelPrice
    endpoints: tuple[str, ...]
    # False when every one of the user's usable keys has an allow-list and none names it.
    allowed: bool

    @property
    def name(self) -> str:
        return self.price.model

    @property
    def is_chat(self) -> bool:
        return "chat" in self.endpoints

    def prices_per_mtok(self) -> dict[str, str]:
        """Each price in USD per 1M tokens as written: ``$0.15``, ``$3.00``, ``$0.075``."""
        price = self.price
        return {"input": usd_per_mtok(price.input_usd_per_mtok),
                "cached": usd_per_mtok(price.cached_price),
                "cache_write": usd_per_mtok(price.cache_write_price),
                "output": usd_per_mtok(price.output_usd_per_mtok)}

    def pico_per_token(self) -> dict[str, int]:
        """Each price as whole pico-USD per token (exact: prices have six decimals)."""
        price = self.price
        return {kind: int(value * PICO_PER_MICRO) for kind, value in (
            ("input", price.input_usd_per_mtok), ("output", price.output_usd_per_mtok),
            ("cached", price.cached_price), ("cache_write", price.cache_write_price))}


def usd_per_mtok(value: Decimal) -> str:
    """Exact, trailing zeros trimmed down to cents, as people write prices."""
    whole, _, fraction = format(value, "f").partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _usable_keys(user: User) -> list[ApiKey]:
    now = timezone.now()
    return list(ApiKey.objects.filter(user=user, revoked_at__isnull=True)
                .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)))


def models_allowed_by_keys(*, user: User) -> frozenset[str] | None:
    """The models the user's usable keys may call, or None when nothing restricts them: a
    key without an allow-list calls any model, and a user without keys has nothing to
    restrict yet (the key they create next may allow everything)."""
    keys = _usable_keys(user)
    if not keys or any(not key.allowed_models for key in keys):
        return None
    return frozenset(model for key in keys for model in key.allowed_models)


def catalogue_of(*, user: User) -> list[CatalogueModel]:
    """The models /v1/models lists (priced now and served by an enabled worker), read
    synchronously (proxy.selectors.routable_prices is for the event loop and cached), each
    marked with whether the user's keys let them call it."""
    served = set(WorkerModel.objects.filter(worker__enabled=True)
                 .values_list("model", flat=True))
    allowed = models_allowed_by_keys(user=user)
    return [CatalogueModel(price=price,
                           endpoints=tuple(ENDPOINTS.get(price.kind, CHAT_ENDPOINTS)),
                           allowed=allowed is None or price.model in allowed)
            for price in sorted(prices_current(), key=lambda p: p.model)
            if price.model in served]


def estimate_micros(*, model: CatalogueModel, prompt_tokens: int,
                    completion_tokens: int) -> int:
    """What so many tokens in and out would cost, rounded up once, as a request is."""
    return model.price.cost_micros(prompt_tokens=prompt_tokens,
                                   completion_tokens=completion_tokens)


# A request's own page ------------------------------------------------------------------


def usage_record_of(*, user: User, request_id: str) -> UsageRecord | None:
    """One of the user's requests; another user's is as absent as one that never was."""
    return (UsageRecord.objects.select_related("api_key", "price")
            .filter(user=user, request_id=request_id).first())


@dataclass(frozen=True)
class CostPart:
    kind: str
    label: str
    tokens: int
    usd_per_mtok: Decimal
    # Exact, before the one rounding: a token can cost a fraction of a micro-USD.
    exact_micros: Decimal

    @property
    def price_text(self) -> str:
        return usd_per_mtok(self.usd_per_mtok)

    @property
    def exact_usd(self) -> str:
        return exact_usd(self.exact_micros)


@dataclass(frozen=True)
class CostBreakdown:
    parts: tuple[CostPart, ...]
    charged_micros: int

    @property
    def exact_micros(self) -> Decimal:
        return sum((part.exact_micros for part in self.parts), Decimal(0))

    @property
    def rounded_micros(self) -> int:
        """The exact sum rounded up once to whole micro-USD, as billing.money does."""
        return math.ceil(self.exact_micros)

    @property
    def exact_usd(self) -> str:
        return exact_usd(self.exact_micros)

    @property
    def rounding_micros(self) -> Decimal:
        """What the charge adds to the exact sum: under one micro-USD when they match."""
        return self.charged_micros - self.exact_micros

    @property
    def matches_charge(self) -> bool:
        return self.rounded_micros == self.charged_micros


def cost_breakdown(record: UsageRecord) -> CostBreakdown:
    """The charge split by kind of token at the price the record was charged at. Cached
    and cache-written tokens are parts of the prompt, so the input line counts the rest."""
    price = record.price
    uncached = record.prompt_tokens - record.cached_tokens - record.cache_write_tokens
    lines = (("input", "Input", uncached, price.input_usd_per_mtok),
             ("cached", "Cached input", record.cached_tokens, price.cached_price),
             ("cache_write", "Cache write", record.cache_write_tokens,
              price.cache_write_price),
             ("output", "Output", record.completion_tokens, price.output_usd_per_mtok))
    # USD per 1M tokens is micro-USD per token, so tokens x price is micro-USD.
    return CostBreakdown(
        parts=tuple(CostPart(kind=kind, label=label, tokens=tokens, usd_per_mtok=rate,
                             exact_micros=tokens * rate)
                    for kind, label, tokens, rate in lines),
        charged_micros=record.cost_micros)


def exact_usd(micros: Decimal) -> str:
    """Exact micro-USD as USD text, at least six decimals: Decimal("1.05") -> "0.00000105"."""
    text = format(micros.scaleb(-6), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(6, '0')}"
