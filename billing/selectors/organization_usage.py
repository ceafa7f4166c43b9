"""Reads of an organization's money: its balance and ledger, what its members, keys and
models spent, and each member's budget.

Usage is read from the raw usage records, by the organization index
(``billing_usage_org``): the daily roll-ups are kept per user, key and model and do not say
which wallet paid, so they cannot tell a member's spending for the organization from their
own. ``member`` narrows every read to one member's requests (a member without a role that
sees everyone's usage is always narrowed to themselves by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from accounts.models import User
from billing.models import LedgerEntry, MemberBudget, UsageRecord, Wallet
from billing.selectors.usage import (
    DailyUsage,
    ModelUsage,
    UsageFilters,
    today_start,
    usage_narrowed,
)
from billing.selectors.wallets import Balance
from billing.services.budgets import current_month
from organizations.models import Organization

_SUMS = {"requests": Count("id"), "prompt_tokens": Sum("prompt_tokens"),
         "completion_tokens": Sum("completion_tokens"), "cost_micros": Sum("cost_micros")}
_FIELDS = tuple(_SUMS)


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


def _records(organization: Organization, member: User | None) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(organization=organization)
    if member is None:
        return records
    # A member's usage is what their budget counts: their own keys', not the service keys
    # an admin made (whose records carry that admin as their user).
    return records.filter(user=member).exclude(api_key__service=True)


def _window(organization: Organization, member: User | None, days: int,
            now: datetime | None) -> QuerySet[UsageRecord]:
    """The records of the last ``days`` UTC days, today included."""
    since = today_start(now or timezone.now()) - timedelta(days=days - 1)
    return _records(organization, member).filter(created_at__gte=since).order_by()


def _sums(row: dict) -> dict[str, int]:
    return {field: row.get(field) or 0 for field in _FIELDS}


def organization_usage_records(*, organization: Organization, member: User | None = None,
                               filters: UsageFilters | None = None
                               ) -> QuerySet[UsageRecord]:
    """The organization's requests (one member's, with ``member``), newest first."""
    records = _records(organization, member).select_related("api_key", "user")
    return usage_narrowed(records, filters or UsageFilters())


def organization_usage_daily(*, organization: Organization, member: User | None = None,
                             days: int = 30, now: datetime | None = None) -> list[DailyUsage]:
    """One row per UTC day, the oldest first, days without use as zeros."""
    now = now or timezone.now()
    first = today_start(now) - timedelta(days=days - 1)
    rows = (_window(organization, member, days, now)
            .annotate(day=TruncDay("created_at", tzinfo=UTC)).values("day").annotate(**_SUMS))
    by_day = {row["day"].astimezone(UTC).date(): row for row in rows}
    result = []
    for offset in range(days):
        day = (first + timedelta(days=offset)).date()
        result.append(DailyUsage(day=day, **_sums(by_day.get(day, {}))))
    return result


def organization_usage_by_model(*, organization: Organization, member: User | None = None,
                                days: int = 30, now: datetime | None = None
                                ) -> list[ModelUsage]:
    """Totals per model over the last ``days`` UTC days, costliest first."""
    rows = _window(organization, member, days, now).values("model").annotate(**_SUMS)
    usage = [ModelUsage(model=row["model"], **_sums(row)) for row in rows]
    return sorted(usage, key=lambda row: (-row.cost_micros, row.model))


def organization_usage_by_member(*, organization: Organization, member: User | None = None,
                                 days: int = 30, now: datetime | None = None
                                 ) -> list[MemberUsage]:
    """Totals per member (the owner of the key that made each request), and one row for
    the service keys, costliest first. Members who left stay listed by what they spent."""
    rows = (_window(organization, member, days, now)
            .values("user_id", "user__email", "api_key__service").annotate(**_SUMS))
    totals: dict[tuple[int | None, str | None], dict[str, int]] = {}
    for row in rows:
        who = (None, None) if row["api_key__service"] else (row["user_id"], row["user__email"])
        bucket = totals.setdefault(who, dict.fromkeys(_FIELDS, 0))
        for name, value in _sums(row).items():
            bucket[name] += value
    usage = [MemberUsage(user_id=user_id, email=email, **sums)
             for (user_id, email), sums in totals.items()]
    return sorted(usage, key=lambda row: (-row.cost_micros, row.email or ""))


def organization_usage_by_key(*, organization: Organization, member: User | None = None,
                              days: int = 30, now: datetime | None = None) -> list[KeyUsage]:
    """Totals per key, costliest first."""
    rows = (_window(organization, member, days, now)
            .values("api_key_id", "api_key__prefix", "api_key__name", "api_key__service",
                    "user__email")
            .annotate(**_SUMS))
    usage = [KeyUsage(api_key_id=row["api_key_id"], prefix=row["api_key__prefix"] or "",
                      name=row["api_key__name"] or "", service=bool(row["api_key__service"]),
                      owner_email=row["user__email"], **_sums(row))
             for row in rows]
    return sorted(usage, key=lambda row: (-row.cost_micros, row.prefix))


def organization_spend_month(*, organization: Organization, member: User | None = None,
                             now: datetime | None = None) -> int:
    """Spent this calendar month (UTC), in micro-USD."""
    start = today_start(now or timezone.now()).replace(day=1)
    total = (_records(organization, member).filter(created_at__gte=start)
             .aggregate(total=Sum("cost_micros"))["total"])
    return total or 0


def organization_key_spend(*, organization: Organization) -> dict[int, int]:
    """What each of the organization's keys spent, ever (keys that spent nothing are
    absent)."""
    rows = (_records(organization, None).exclude(api_key_id=None).order_by()
            .values("api_key_id").annotate(total=Sum("cost_micros")))
    return {row["api_key_id"]: row["total"] for row in rows if row["total"]}


def organization_balance(*, organization: Organization) -> Balance:
    wallet = Wallet.objects.filter(organization=organization).first()
    if wallet is None:
        return Balance(posted_micros=0, pending_micros=0)
    return Balance(posted_micros=wallet.posted_micros, pending_micros=wallet.pending_micros)


def organization_ledger_entries(*, organization: Organization) -> QuerySet[LedgerEntry]:
    """The organization wallet's entries (credits and charges), newest first."""
    return (LedgerEntry.objects.filter(wallet__organization=organization)
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
