"""Reads of API keys' spend caps."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import ApiKey


@dataclass(frozen=True)
class SpendCaps:
    """A key's caps in micro-USD; None is no cap."""

    lifetime_limit_micros: int | None = None
    monthly_limit_micros: int | None = None

    @property
    def any(self) -> bool:
        return self.lifetime_limit_micros is not None or self.monthly_limit_micros is not None


def key_spend_caps(*, api_key: ApiKey) -> SpendCaps:
    """The key's caps (a key without a budget row has none). Reads ``api_key.budget``, so
    select_related("budget") saves a query per key."""
    try:
        budget = api_key.budget
    except ApiKey.budget.RelatedObjectDoesNotExist:
        return SpendCaps()
    return SpendCaps(lifetime_limit_micros=budget.lifetime_limit_micros,
                     monthly_limit_micros=budget.monthly_limit_micros)
