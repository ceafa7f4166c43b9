"""Money on staff pages in one format: ``$12.345678`` (billing.money.format_usd), with the
exact integer of micro-USD on hover."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.money import format_usd

register = template.Library()


@register.filter
def usd(micros: int | None) -> SafeString | str:
    if micros is None:
        return "unknown"
    sign = "-" if micros < 0 else ""
    return format_html('<span class="money" title="{} micro-USD">{}${}</span>', micros, sign,
                       format_usd(abs(micros)))
