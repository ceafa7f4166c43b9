"""Template filters of the portal, one format everywhere (the admin's too, see
router_admin/admin_display.py): money as ``$x.xxxxxx`` with the exact micro-USD on hover,
moments as ``2026-12-05 16:30 UTC`` in a ``<time>`` element, keys by prefix and name."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from billing.money import format_usd

register = template.Library()

DASH = "\u2014"  # what an unknown amount or moment shows: never $0, which would be a claim


def usd(micros: int | None) -> str:
    """``$12.500000``, ``-$0.000100``: plain text for messages and chart
    labels; six decimals always, so that a column's digits line up and no amount looks
    rounder (or more exact) than another."""
    if micros is None:
        return DASH
    return f"-${format_usd(-micros)}" if micros < 0 else f"${format_usd(micros)}"


@register.filter(name="usd")
def usd_html(micros: int | None) -> SafeString | str:
    """The ``usd`` text in a span whose title holds the exact micro-USD (shown on hover)."""
    if micros is None:
        return DASH
    return format_html('<span class="money" title="{} micro-USD">{}</span>',
                       f"{micros:,}", usd(micros))


def when_text(moment: datetime) -> str:
    """``2026-12-05 16:30 UTC``: ISO order, sortable by eye, the zone said."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@register.filter
def when(moment: datetime | None) -> SafeString | str:
    """``when_text`` in a ``<time>`` element carrying the exact ISO moment (to the second)."""
    if moment is None:
        return DASH
    exact = moment.astimezone(UTC).isoformat(timespec="seconds")
    return format_html('<time datetime="{}" title="{}">{}</time>', exact, exact,
                       when_text(moment))


@register.filter
def last_used(moment: datetime | None, now: datetime | None = None) -> SafeString | str:
    """``just now`` under a minute (timesince would say "0 minutes ago"), else ``2 hours
    ago``; ``never`` for a key or token never used. The exact moment is on hover."""
    if moment is None:
        return "never"
    now = now or timezone.now()
    ago = "just now" if (now - moment).total_seconds() < 60 else f"{timesince(moment, now)} ago"
    return format_html('<time datetime="{}" title="{}">{}</time>',
                       moment.astimezone(UTC).isoformat(timespec="seconds"),
                       when_text(moment), ago)


@register.filter
def key_label(api_key: object | None) -> SafeString | str:
    """A key as people tell keys apart: its prefix (what a log or the API shows) beside
    its name, when it has one."""
    if api_key is None:
        return DASH
    prefix, name = getattr(api_key, "prefix", ""), getattr(api_key, "name", "")
    if name:
        return format_html('<code>{}\u2026</code> <span class="key-name">{}</span>', prefix, name)
    return format_html("<code>{}\u2026</code>", prefix)


@register.filter
def thousands(number: int | None) -> str:
    """``12,345`` for token counts."""
    return DASH if number is None else f"{number:,}"
