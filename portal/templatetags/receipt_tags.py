"""Template filters of receipts: which credit has one, and a receipt's moment in ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template

from billing.models import LedgerEntry
from billing.selectors.receipts import entry_has_receipt, receipt_number

register = template.Library()


@register.filter
def has_receipt(entry: LedgerEntry) -> bool:
    """Whether a ledger row (the top-ups page's credits) links to a receipt."""
    return entry_has_receipt(entry)


@register.filter
def receipt_label(entry_id: int) -> str:
    """A receipt link's text: the receipt's number, so each link says which it opens."""
    return receipt_number(entry_id)


@register.filter
def iso_utc(moment: datetime) -> str:
    """``2026-12-05T16:30:05Z``: a receipt's date, to the second, in UTC."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
