"""Template filters of the portal: money shown exactly, without float."""

from __future__ import annotations

from django import template

from billing.money import format_usd

register = template.Library()


@register.filter
def usd(micros: int | None) -> str:
    """``$12.50`` for 12_500_000 micros, ``$0.000123`` for 123: exact to the micro-USD, with
    trailing zeros trimmed down to cents so that round amounts read as people write them."""
    if micros is None:
        return "\u2014"
    whole, _, fraction = format_usd(micros).partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"-${whole.lstrip('-')}.{fraction}" if micros < 0 else f"${whole}.{fraction}"


@register.filter
def thousands(number: int | None) -> str:
    """``12,345`` for token counts."""
    return "\u2014" if number is None else f"{number:,}"
