"""Reads of an organization's money: its balance and ledger, what its members, keys and
models spent, and each member's budget.

Sums (per day, member, key, model; the month's spend; each key's spend ever) read the
organization's daily roll-ups, hourly roll-ups (index ``billing_rollup_org``) and raw usage
records (index ``billing_usage_org``), each for the stretch of time it is complete and
cheapest for, as a user's own usage does (``billing.selectors.usage_sources``): today's
numbers are exact to the last request, and a busy organization's read about an hour of
records, not the day's or the month's.
The list of requests itself is read from the records. ``member`` narrows every read to one
member's requests (a member without a role that sees everyone's usage is always narrowed to
themselves by the caller).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import QuerySet, Subquery
from django.utils import timezone

from accounts.models import User
from billing.models import LedgerEntry, MemberBudget, UsageRecord, UsageRollup, Wallet
from billing.selectors.usage import (
    DailyUsage,
    ModelUsage,
    UsageFilters,
    daily_usage,
    usage_narrowed,
)
from billing.selectors.usage_sources import SUM_FIELDS, days_back, today_start, usage_sums
from billing.selectors.wallets import Balance
from billing.services.budgets import current_month
from organizations.models import Organization

_FIELDS = SUM_FIELDS
# Before any usage this router can have recorded: "ever".
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MemberUsage:
    """One member's sums; user_id and email None: the service keys', which count against
    no member."""

    user_id: int | None
    email: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


@dataclass(frozen=True)
class KeyUsage:
    api_key_id: int | None
    prefix: str
    name: str
    service: bool
    owner_email: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


@dataclass(frozen=True)
class MemberBudgetView:
    """A member's caps in the organization and what they spent against them, in micro-USD
    (a cap of None is no cap)."""

    user_id: int
    email: str
    lifetime_limit_micros: int | None
    monthly_limit_micros: int | None
    spent_micros: int
    month_spent_micros: int  # this calendar month (UTC)
    pending_micros: int  # held by their requests in flight


def _narrowed(rows: QuerySet, member: User | None) -> QuerySet:
    """Records or roll-ups of one member (None: everyone's). A member's usage is what their
    budget counts: their own keys', not the service keys an admin made (whose records carry
    that admin as their user)."""
    if member is None:
        return rows
    return rows.filter(user=member).exclude(api_key__service=True)


def _records(organization: Organization, member: User | None) -> QuerySet[UsageRecord]:
    return _narrowed(UsageRecord.objects.filter(organization=organization), member)


def _rollups(organization: Organization, member: User | None) -> QuerySet[UsageRollup]:
    return _narrowed(UsageRollup.objects.filter(organization=organization), member)


def _totals(organization: Organization, member: User | None, *, since: datetime,
            now: datetime | None, by: Sequence[str]) -> dict[tuple, dict[str, int]]:
    """Sums per ``by`` (fields both sources have) from ``since`` (a UTC midnight) to now."""
    return usage_sums(_rollups(organization, member), _records(organization, member),
                      since=since, now=now or timezone.now(), by=by)


def _since(days: int, now: datetime | None) -> datetime:
    """The start of the last ``days`` UTC days, today included."""
    return days_back(now or timezone.now(), days)


def organization_usage_records(*, organization: Organization, member: User | None = None,
                               filters: UsageFilters | None = None
                               ) -> QuerySet[UsageRecord]:
    """The organization's requests (one member's, with ``member``), newest first."""
    records = _records(organization, member).select_related("api_key", "user")
    return usage_narrowed(records, filters or UsageFilters())


def organization_usage_daily(*, organization: Organization, member: User | None = None,
                             days: int = 30, now: datetime | None = None) -> list[DailyUsage]:
    """One row per UTC day, the oldest first, days without use as zeros."""
    return daily_usage(_rollups(organization, member), _records(organization, member),
                       days=days, now=now or timezone.now())


def organization_usage_by_model(*, organization: Organization, member: User | None = None,
                                days: int = 30, now: datetime | None = None
                                ) -> list[ModelUsage]:
    """Totals per model over the last ``days`` UTC days, costliest first."""
    totals = _totals(organization, member, since=_since(days, now), now=now, by=("model",))
    usage = [ModelUsage(model=model, **sums) for (model,), sums in totals.items()]
    return sorted(usage, key=lambda row: (-row.cost_micros, row.model))


def organization_usage_by_member(*, organization: Organization, member: User | None = None,
                                 days: int = 30, now: datetime | None = None
                                 ) -> list[MemberUsage]:
    """Totals per member (the owner of the key that made each request), and one row for
    the service keys, costliest first. Members who left stay listed by what they spent."""
    rows = _totals(organization, member, since=_since(days, now), now=now,
                   by=("user_id", "user__email", "api_key__service"))
    totals: dict[tuple[int | None, str | None], dict[str, int]] = {}
    for (user_id, email, service), sums in rows.items():
        who = (None, None) if service else (user_id, email)
        bucket = totals.setdefault(who, dict.fromkeys(_FIELDS, 0))
        for name, value in sums.items():
            bucket[name] += value
    usage = [MemberUsage(user_id=user_id, email=email, **sums)
             for (user_id, email), sums in totals.items()]
    return sorted(usage, key=lambda row: (-row.cost_micros, row.email or ""))


def organization_usage_by_key(*, organization: Organization, member: User | None = None,
                              days: int = 30, now: datetime | None = None) -> list[KeyUsage]:
    """Totals per key, costliest first."""
    rows = _totals(organization, member, since=_since(days, now), now=now,
                   by=("api_key_id", "api_key__prefix", "api_key__name", "api_key__service",
                       "user__email"))
    usage = [KeyUsage(api_key_id=key_id, prefix=prefix or "", name=name or "",
                      service=bool(service), owner_email=email, **sums)
             for (key_id, prefix, name, service, email), sums in rows.items()]
    return sorted(usage, key=lambda row: (-row.cost_micros, row.prefix))


def organization_spend_month(*, organization: Organization, member: User | None = None,
                             now: datetime | None = None) -> int:
    """Spent this calendar month (UTC), in micro-USD."""
    start = today_start(now or timezone.now()).replace(day=1)
    return _totals(organization, member, since=start, now=now, by=())[()]["cost_micros"]


def organization_key_spend(*, organization: Organization,
                           now: datetime | None = None) -> dict[int, int]:
    """What each of the organization's keys spent, ever (keys that spent nothing are
    absent), exact to the last request like the other sums."""
    totals = _totals(organization, None, since=_EPOCH, now=now, by=("api_key_id",))
    return {key_id: sums["cost_micros"] for (key_id,), sums in totals.items()
            if key_id is not None and sums["cost_micros"]}


def organization_balance(*, organization: Organization) -> Balance:
    wallet = Wallet.objects.filter(organization=organization).first()
    if wallet is None:
        return Balance(posted_micros=0, pending_micros=0)
    return Balance(posted_micros=wallet.posted_micros, pending_micros=wallet.pending_micros)


def organization_ledger_entries(*, organization: Organization) -> QuerySet[LedgerEntry]:
    """The organization wallet's entries (credits and charges), newest first.

    The wallet is a scalar subquery, not a join: joined, the planner cannot tell how many
    of the ledger's rows are this wallet's, and sorts all of them (and looks up each one's
    hold) to show the newest 50; by ``wallet_id = (subquery)`` it reads the (wallet, -id)
    index in order and stops at the page's end."""
    wallet_id = Wallet.objects.filter(organization=organization).values("pk")[:1]
    return (LedgerEntry.objects.filter(wallet_id=Subquery(wallet_id))
            .select_related("hold").order_by("-id"))


def member_budgets_of(*, organization: Organization,
                      member: User | None = None) -> list[MemberBudgetView]:
    """Each current member's budget (one member's, with ``member``), by email."""
    budgets = (MemberBudget.objects.filter(organization=organization,
                                           user__memberships__organization=organization)
               .select_related("user").order_by("user__email"))
    if member is not None:
        budgets = budgets.filter(user=member)
    month = current_month()
    return [MemberBudgetView(
        user_id=budget.user_id, email=budget.user.email,
        lifetime_limit_micros=budget.lifetime_limit_micros,
        monthly_limit_micros=budget.monthly_limit_micros, spent_micros=budget.spent_micros,
        # The row counts the month of its last reservation; an older month is this one's 0.
        month_spent_micros=budget.month_spent_micros if budget.month == month else 0,
        pending_micros=budget.pending_micros) for budget in budgets]
