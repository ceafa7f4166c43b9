"""Money on the wire: USD as decimal strings ("12.345678"), exact to the micro-USD, never a
JSON number (a float cannot hold every cent)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.money import MoneyError, format_usd, usd_to_micros

# A cap above this is no cap anyone means, and keeps micro-USD well inside a bigint.
MAX_AMOUNT_MICROS = 10**9 * 10**6


@extend_schema_field({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$",
                      "example": "12.345678"})
class UsdField(serializers.Field):
    """Read-only: an integer of micro-USD, shown as USD with six decimals."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: int) -> str:
        return format_usd(value)


@extend_schema_field({"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,6})?$",
                      "example": "25.50"})
class UsdAmountField(serializers.Field):
    """Writable: USD as a string (or a whole number), validated to micro-USD exactly."""

    default_error_messages = {
        "invalid": 'Give an amount of USD as a string, e.g. "25.50".',
        "number": 'Give an amount of USD as a string, e.g. "25.50", not a JSON number with '
                  "a fraction: those lose cents on the way.",
        "negative": "An amount cannot be negative.",
        "too_large": "An amount is at most 1000000000 USD.",
    }

    def to_internal_value(self, data: object) -> int:
        if isinstance(data, float):
            self.fail("number")
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        try:
            micros = usd_to_micros(data)
        except MoneyError as error:
            raise serializers.ValidationError(str(error)) from None
        if micros < 0:
            self.fail("negative")
        if micros > MAX_AMOUNT_MICROS:
            self.fail("too_large")
        return micros

    def to_representation(self, value: int) -> str:
        return format_usd(value)
