"""Reads of usage: a user's, for the portal and the self-service API, and the records that
flag a misbehaving upstream, per worker, for the staff pages.

A user's usage is what their own wallet paid: requests they made with an organization's
keys are the organization's (``billing.selectors.organization_usage``).

Aggregates read the daily roll-ups, the hourly roll-ups and the raw records, each for
the stretch of time it is complete and cheapest for (``billing.selectors.usage_sources``):
today's figures are exact to the last request and a busy user's read about an hour of
records, not the day's.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from accounts.models import User
from billing.models import BAD_USAGE_REASONS, UsageRecord, UsageRollup
from billing.selectors.usage_sources import SUM_FIELDS, days_back, today_start, usage_sums


@dataclass(frozen=True)
class SpendSummary:
    today_micros: int
    month_micros: int
    requests_today: int


@dataclass(frozen=True)
class DailyUsage:
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


@dataclass(frozen=True)
class UsageFilters:
    model: str = ""
    api_key_id: int | None = None
    status: str = ""
    endpoint: str = ""  # a UsageRecord.Endpoint: the API the requests came in through
    since: datetime | None = None
    until: datetime | None = None


_FIELDS = SUM_FIELDS


def _totals(user: User, *, since: datetime, now: datetime, by: str | None) -> dict:
    """Sums per ``by`` (a field both sources have, or None for one total) from ``since``
    (a UTC midnight) to now."""
    sums = usage_sums(UsageRollup.objects.filter(user=user, organization=None),
                      UsageRecord.objects.filter(user=user, organization=None),
                      since=since, now=now, by=(by,) if by else ())
    # Without ``by`` there is always the one key (), sums of nothing being zeros.
    return {(key[0] if by else None): row for key, row in sums.items()}


def usage_spend_summary(*, user: User, now: datetime | None = None) -> SpendSummary:
    now = now or timezone.now()
    today = today_start(now)
    # The month's days in one read of each source: today is one of them.
    by_day = usage_sums(UsageRollup.objects.filter(user=user, organization=None),
                        UsageRecord.objects.filter(user=user, organization=None),
                        since=today.replace(day=1), now=now, per_day=True)
    today_totals = by_day.get((today.date(),), dict.fromkeys(_FIELDS, 0))
    return SpendSummary(today_micros=today_totals["cost_micros"],
                        month_micros=sum(day["cost_micros"] for day in by_day.values()),
                        requests_today=today_totals["requests"])


def usage_daily(*, user: User, days: int = 30, now: datetime | None = None) -> list[DailyUsage]:
    """One row per UTC day, the oldest first, days without use included as zeros."""
    return daily_usage(UsageRollup.objects.filter(user=user, organization=None),
                       UsageRecord.objects.filter(user=user, organization=None),
                       days=days, now=now or timezone.now())


def daily_usage(rollups: QuerySet[UsageRollup], records: QuerySet[UsageRecord], *,
                days: int, now: datetime) -> list[DailyUsage]:
    """The last ``days`` UTC days of one owner's ``rollups`` and ``records``, the oldest
    first, days without use as zeros (a user's own, or an organization's)."""
    first = days_back(now, days)
    by_day = usage_sums(rollups, records, since=first, now=now, per_day=True)
    empty = dict.fromkeys(_FIELDS, 0)
    return [DailyUsage(day=day, **by_day.get((day,), empty))
            for day in ((first + timedelta(days=offset)).date() for offset in range(days))]


def usage_by_model(*, user: User, days: int = 30,
                   now: datetime | None = None) -> list[ModelUsage]:
    """Totals per model over the last ``days`` UTC days (today included), costliest first."""
    now = now or timezone.now()
    totals = _totals(user, since=days_back(now, days), now=now, by="model")
    rows = [ModelUsage(model=model, **sums) for model, sums in totals.items()]
    return sorted(rows, key=lambda row: (-row.cost_micros, row.model))


def api_key_spend_of(*, user: User, now: datetime | None = None) -> dict[int, int]:
    """What each of the user's keys has spent, ever, in micro-USD (keys that spent nothing
    are absent)."""
    now = now or timezone.now()
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    totals = _totals(user, since=epoch, now=now, by="api_key_id")
    return {key_id: sums["cost_micros"] for key_id, sums in totals.items()
            if key_id is not None and sums["cost_micros"]}


def usage_records_of(*, user: User,
                     filters: UsageFilters | None = None) -> QuerySet[UsageRecord]:
    """The user's requests, newest first, narrowed by ``filters``; only ever their own, and
    only those their own wallet paid (an organization's are on its pages)."""
    records = (UsageRecord.objects.filter(user=user, organization=None)
               .select_related("api_key"))
    return usage_narrowed(records, filters or UsageFilters())


def usage_narrowed(records: QuerySet[UsageRecord],
                   filters: UsageFilters) -> QuerySet[UsageRecord]:
    """``records`` narrowed by ``filters``, newest first (the portal's and the API's lists,
    a person's or an organization's)."""
    if filters.model:
        records = records.filter(model=filters.model)
    if filters.api_key_id is not None:
        records = records.filter(api_key_id=filters.api_key_id)
    if filters.status:
        records = records.filter(status=filters.status)
    if filters.endpoint:
        records = records.filter(endpoint=filters.endpoint)
    if filters.since is not None:
        records = records.filter(created_at__gte=filters.since)
    if filters.until is not None:
        records = records.filter(created_at__lt=filters.until)
    return records.order_by("-created_at", "-pk")


# The condition of the partial index ``billing_usage_flagged``, word for word: PostgreSQL
# uses a partial index only for a query whose WHERE clause implies the index's predicate.
USAGE_FLAGGED = (Q(over_cap=True) | Q(over_hold=True)
                 | Q(estimate_reason__in=BAD_USAGE_REASONS))


@dataclass(frozen=True)
class WorkerUsageFlags:
    """A worker's flagged usage records. One record can count under more than one flag (an
    answer cut at its cap whose reported output was above the cap, say)."""

    over_cap: int = 0
    over_hold: int = 0
    # Records charged at the router's count because the upstream's usage was not believed,
    # per ``UsageRecord.EstimateReason`` in BAD_USAGE_REASONS; reasons not seen are absent.
    bad_usage_by_reason: dict[str, int] = dataclass_field(default_factory=dict)

    @property
    def bad_usage(self) -> int:
        return sum(self.bad_usage_by_reason.values())

    @property
    def any(self) -> bool:
        return bool(self.over_cap or self.over_hold or self.bad_usage_by_reason)


def usage_flags_by_worker(*, since: datetime, workers: Collection[str] | None = None
                          ) -> dict[str, WorkerUsageFlags]:
    """Flagged usage records per worker name from ``since``, in one query over the partial
    index, narrowed to ``workers`` when given. Workers with nothing flagged are absent."""
    records = UsageRecord.objects.filter(USAGE_FLAGGED, created_at__gte=since)
    if workers is not None:
        if not workers:
            return {}
        records = records.filter(worker__in=sorted(set(workers)))
    reasons = {f"reason_{reason}": Count("pk", filter=Q(estimate_reason=reason))
               for reason in BAD_USAGE_REASONS}
    rows = records.order_by().values("worker").annotate(
        n_over_cap=Count("pk", filter=Q(over_cap=True)),
        n_over_hold=Count("pk", filter=Q(over_hold=True)),
        **reasons,
    )
    return {
        row["worker"]: WorkerUsageFlags(
            over_cap=row["n_over_cap"], over_hold=row["n_over_hold"],
            bad_usage_by_reason={reason: row[f"reason_{reason}"]
                                 for reason in BAD_USAGE_REASONS if row[f"reason_{reason}"]},
        )
        for row in rows
    }
