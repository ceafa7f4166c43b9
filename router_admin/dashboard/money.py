"""Money in (the ledger's credits by source) and spend per user (the usage roll-ups)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Exists, OuterRef, Q, Sum
from django.db.models.functions import Trunc

from accounts.models import User
from billing.models import CheckoutTopUp, LedgerEntry, UsageOwnerRollup
from organizations.models import Organization
from router_admin.dashboard.periods import Window

SOURCES = (("card", "Card"), ("voucher", "Voucher"), ("staff", "Staff credit"))
RUN_OUT_DAYS = 7
TOP_USERS = 10


@dataclass(frozen=True)
class MoneyIn:
    by_source: dict[str, int]  # source -> micro-USD
    by_bucket: dict[datetime, dict[str, int]]

    @property
    def total(self) -> int:
        return sum(self.by_source.values())


def money_in(window: Window) -> MoneyIn:
    """Credits since the window's start: card top-ups (those a Stripe Checkout credited),
    redeemed vouchers, and staff credits (positive adjustments, and top-ups entered by staff
    rather than paid). Refunds of charges are not money in.

    ``kind IN (...)`` matches the partial index billing_ledger_credits_by_time, so the
    ledger's charges (one a request) are never read."""
    card = CheckoutTopUp.objects.filter(credited_entry=OuterRef("pk"))
    rows = (LedgerEntry.objects
            .filter(kind__in=[LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VOUCHER,
                              LedgerEntry.Kind.ADJUSTMENT], created_at__gte=window.start)
            .filter(~Q(kind=LedgerEntry.Kind.ADJUSTMENT) | Q(amount_micros__gt=0))
            .annotate(card=Exists(card),
                      bucket=Trunc("created_at", window.unit, tzinfo=UTC))
            .values("bucket", "kind", "card").annotate(total=Sum("amount_micros"))
            .order_by())
    by_source = {key: 0 for key, _ in SOURCES}
    by_bucket: dict[datetime, dict[str, int]] = defaultdict(lambda: dict.fromkeys(by_source, 0))
    for row in rows:
        if row["kind"] == LedgerEntry.Kind.VOUCHER:
            source = "voucher"
        elif row["kind"] == LedgerEntry.Kind.TOPUP and row["card"]:
            source = "card"
        else:
            source = "staff"
        by_source[source] += row["total"]
        by_bucket[row["bucket"]][source] += row["total"]
    return MoneyIn(by_source=by_source, by_bucket=dict(by_bucket))


@dataclass(frozen=True)
class Spender:
    """A user spending their own wallet, or an organization (``organization_id``; its
    members' spend together, against its wallet)."""

    user_id: int | None
    email: str  # the user's email, or the organization's name
    spend_micros: int
    available_micros: int | None  # None: no wallet
    days_left: float | None  # at the window's rate; None when nothing was spent
    organization_id: int | None = None


@dataclass(frozen=True)
class Spenders:
    top: list[Spender]
    running_out: list[Spender]


def spenders(window: Window) -> Spenders:
    """Spend over the window per wallet: a user's own, and each organization's (the
    window's owner roll-ups summed per owner, then the owners' wallets read), its top, and
    those whose available balance lasts under RUN_OUT_DAYS at the window's average daily
    rate."""
    # The owners' sums of each bucket (a row per owner and bucket: about 25,000 for a day
    # of hours with 1,000 spenders, where the roll-ups per key and model had 96,000 at 10M
    # records), summed per owner id, then the few hundred owners joined to their wallets:
    # joined before summing, the rows were sorted on each owner's email and balances.
    rollups = (UsageOwnerRollup.objects
               .filter(period=window.unit, bucket_start__gte=window.start).order_by())
    user_spend: dict[int, int] = {}
    team_spend: dict[int, int] = defaultdict(int)
    for user_id, organization_id, spend in (
            rollups.values("user_id", "organization_id").annotate(spend=Sum("cost_micros"))
            .values_list("user_id", "organization_id", "spend")):
        if organization_id is None:
            user_spend[user_id] = spend
        else:
            team_spend[organization_id] += spend
    user_spend = {owner: spend for owner, spend in user_spend.items() if spend > 0}
    team_spend = {owner: spend for owner, spend in team_spend.items() if spend > 0}
    personal = [{**row, "user_id": row["id"], "spend": user_spend[row["id"]]}
                for row in User.objects.filter(id__in=user_spend).values(
                    "id", "email", "wallet__posted_micros", "wallet__pending_micros")]
    teams = [{**row, "organization_id": row["id"], "spend": team_spend[row["id"]]}
             for row in Organization.objects.filter(id__in=team_spend).values(
                 "id", "name", "wallet__posted_micros", "wallet__pending_micros")]
    everyone = [_spender(window, row, "user") for row in personal]
    everyone += [_spender(window, row, "organization") for row in teams]

    def order(spender: Spender) -> tuple[int, int]:
        return (spender.user_id or 0, spender.organization_id or 0)

    top = sorted(everyone, key=lambda s: (-s.spend_micros, *order(s)))[:TOP_USERS]
    running_out = sorted((s for s in everyone if s.days_left is not None
                          and s.days_left < RUN_OUT_DAYS),
                         key=lambda s: (s.days_left, *order(s)))[:TOP_USERS]
    return Spenders(top=top, running_out=running_out)


def _spender(window: Window, row: dict, owner: str) -> Spender:
    posted = row["wallet__posted_micros"]
    available = None if posted is None else posted - row["wallet__pending_micros"]
    days_left = None if available is None else max(available, 0) / (row["spend"] / window.days)
    if owner == "user":
        return Spender(user_id=row["user_id"], email=row["email"],
                       spend_micros=row["spend"], available_micros=available,
                       days_left=days_left)
    return Spender(user_id=None, email=row["name"], spend_micros=row["spend"],
                   available_micros=available, days_left=days_left,
                   organization_id=row["organization_id"])
