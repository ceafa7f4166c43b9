"""Domain errors of billing; the API layer maps them to OpenAI-shaped responses."""

from __future__ import annotations

from billing.money import format_usd


class BillingError(Exception):
    pass


class InsufficientFunds(BillingError):
    def __init__(self, *, needed_micros: int, available_micros: int) -> None:
        self.needed_micros = needed_micros
        self.available_micros = available_micros
        super().__init__(
            f"This request needs up to ${format_usd(needed_micros)} but the available balance "
            f"is ${format_usd(available_micros)}."
        )


class IdempotencyConflict(BillingError):
    """The idempotency key was already used for a different operation."""


class HoldNotFound(BillingError):
    pass


class InvalidAmount(BillingError):
    pass


class KeySpendCapReached(BillingError):
    """The key's own spend cap, not the wallet, cannot cover the request."""

    def __init__(self, *, needed_micros: int, remaining_micros: int, period: str) -> None:
        self.needed_micros = needed_micros
        self.remaining_micros = max(0, remaining_micros)
        self.period = period  # "lifetime" or "monthly"
        super().__init__(
            f"This API key has reached its {period} spend cap: this request needs up to "
            f"${format_usd(needed_micros)} but ${format_usd(self.remaining_micros)} of the "
            "cap remains."
        )


class InvalidAlert(BillingError):
    """Low-balance alert settings that cannot be saved; the message says why."""
