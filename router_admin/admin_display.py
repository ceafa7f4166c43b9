"""Cells for the admin's list pages, in one format everywhere: money as ``$x.xxxxxx``
right-aligned with the exact micro-USD on hover, long ids shortened with the whole value on
hover. The look is the theme's (router_admin/static/router_admin/theme.css); these only
give it the markup, since a column's full value can reach the browser only in the page.

    @admin.display(description="Amount (USD)", ordering="amount_micros")
    def amount_usd(self, entry):
        return usd_cell(entry.amount_micros)
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.money import format_usd

ELLIPSIS = "\u2026"
UNKNOWN = "\u2014"  # what an unknown amount shows: never $0, which would be a claim


def short_id(value: object, keep: int = 12) -> SafeString | str:
    """``value``'s first ``keep`` characters and an ellipsis, the whole value in the title
    (shown on hover, and copied by selecting the cell); short values are shown whole."""
    if value is None or value == "":
        return UNKNOWN
    text = str(value)
    if len(text) <= keep:
        return format_html('<span class="router-id">{}</span>', text)
    return format_html('<span class="router-id" title="{}">{}{}</span>',
                       text, text[:keep], ELLIPSIS)


def usd(micros: int) -> str:
    """``$12.345678``, ``-$0.000100``: the sign before the dollar, six decimals always, so
    the digits of a column line up."""
    return f"-${format_usd(-micros)}" if micros < 0 else f"${format_usd(micros)}"


def usd_cell(micros: int | None) -> SafeString:
    """A money cell: right-aligned ``$x.xxxxxx``, its exact micro-USD in the title; a dash
    (right-aligned too) for an amount that is unknown, such as an upstream cost never
    priced."""
    if micros is None:
        return format_html('<span class="router-money unknown" title="unknown">{}</span>',
                           UNKNOWN)
    return format_html('<span class="router-money{}" title="{} micro-USD">{}</span>',
                       " negative" if micros < 0 else "", f"{micros:,}", usd(micros))


def when(moment: datetime | None) -> SafeString | str:
    """``2026-12-05 16:30`` (UTC, which the admin runs in), the exact ISO time on hover: a
    fifth of the width of Django's "Dec. 5, 2026, 4:30 p.m.", and sortable by eye."""
    if moment is None:
        return UNKNOWN
    moment = moment.astimezone(UTC)
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(),
                       moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M"))


def short_text(value: object, keep: int = 28) -> SafeString | str:
    """Text (an email, a model's name) cut to ``keep`` characters, the whole on hover."""
    if value is None or value == "":
        return UNKNOWN
    text = str(value)
    if len(text) <= keep:
        return text
    return format_html('<span title="{}">{}{}</span>', text, text[:keep], ELLIPSIS)
