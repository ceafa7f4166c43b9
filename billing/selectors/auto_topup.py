"""Reads of auto top-up: who hears about a wallet, a wallet's settings and charges as its
owner sees them, and which wallets are due a charge."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db.models import F
from django.utils import timezone

from billing.models import AutoTopUp, AutoTopUpCharge, Wallet
from billing.selectors.topups import stripe_topups_enabled
from organizations.selectors import billing_contacts_of


def wallet_contacts(wallet: Wallet) -> list[str]:
    """The addresses told about a wallet's money (auto top-up switched off, ...).

    The one place that decides it, read when a message is sent: a person's wallet answers
    their email; an organization's, its owners and billing members (the roles that may see
    its billing, owners first), whoever they are by then.
    """
    if wallet.organization_id is not None:
        return billing_contacts_of(organization_id=wallet.organization_id)
    if wallet.user_id is None:
        return []
    email = wallet.user.email
    return [email] if email else []


def month_of(at: datetime) -> date:
    """The first day of ``at``'s calendar month in UTC: the ceiling's period."""
    return at.astimezone(UTC).date().replace(day=1)


@dataclass(frozen=True)
class AutoTopUpState:
    """A wallet's auto top-up as its owner sees it, with the defaults before it is set."""

    available: bool  # Stripe is configured, so cards can be saved and charged
    enabled: bool
    threshold_micros: int
    amount_micros: int
    monthly_ceiling_micros: int
    month_total_micros: int  # charged or being charged this UTC month
    has_card: bool
    card_brand: str
    card_last4: str
    disabled_reason: str
    disabled_at: datetime | None
    in_flight: bool


def auto_topup_state_of(*, wallet: Wallet, now: datetime | None = None) -> AutoTopUpState:
    row = AutoTopUp.objects.filter(wallet=wallet).first()
    if row is None:
        return AutoTopUpState(
            available=stripe_topups_enabled(), enabled=False,
            threshold_micros=AutoTopUp.DEFAULT_THRESHOLD_MICROS,
            amount_micros=AutoTopUp.DEFAULT_AMOUNT_MICROS,
            monthly_ceiling_micros=AutoTopUp.DEFAULT_MONTHLY_CEILING_MICROS,
            month_total_micros=0, has_card=False, card_brand="", card_last4="",
            disabled_reason="", disabled_at=None, in_flight=False)
    this_month = month_of(now or timezone.now())
    return AutoTopUpState(
        available=stripe_topups_enabled(), enabled=row.enabled,
        threshold_micros=row.threshold_micros, amount_micros=row.amount_micros,
        monthly_ceiling_micros=row.monthly_ceiling_micros,
        # The total is reset by the first claim of a new month, not when the month turns.
        month_total_micros=row.month_total_micros if row.month == this_month else 0,
        has_card=bool(row.payment_method_id), card_brand=row.card_brand,
        card_last4=row.card_last4, disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at, in_flight=row.in_flight_charge_id is not None)


def auto_topup_charges_of(*, wallet: Wallet, limit: int = 20) -> list[AutoTopUpCharge]:
    """The wallet's auto top-up charges, newest first."""
    return list(AutoTopUpCharge.objects.filter(wallet=wallet).order_by("-id")[:limit])


def auto_topups_due(*, wallet_ids: Iterable[int] | None = None) -> list[int]:
    """Wallets (all, or among ``wallet_ids``) whose posted balance is below their threshold
    with nothing in flight. The monthly ceiling, and all of this again, is checked by the
    claim itself (``billing.services.auto_topup``): this list only says where to try."""
    rows = AutoTopUp.objects.filter(enabled=True, in_flight_charge__isnull=True,
                                    wallet__posted_micros__lt=F("threshold_micros"))
    if wallet_ids is not None:
        rows = rows.filter(wallet_id__in=list(wallet_ids))
    return list(rows.order_by("wallet_id").values_list("wallet_id", flat=True))
