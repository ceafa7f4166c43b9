"""What staff see of one organization: its balance, money in, and for the last 24 hours,
7 and 30 days the dashboard's figures (requests, errors, charged, upstream cost and
margin, tokens, latency) with its top members and models.

Read from the organization's usage records through their partial index
(``billing_usage_org``: organization, created_at), one aggregate per period; an
organization's records are a small part of the table, and these pages are staff's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import LedgerEntry, UsageRecord, Wallet
from organizations.models import Organization

PERIODS = (("24 h", timedelta(hours=24)), ("7 d", timedelta(days=7)),
           ("30 d", timedelta(days=30)))
TOP = 5


@dataclass(frozen=True)
class PeriodFigures:
    label: str
    requests: int
    failed: int
    charged_micros: int
    upstream_micros: int | None  # None: no request of the period has a known cost
    unknown_cost_requests: int
    prompt_tokens: int
    completion_tokens: int
    money_in_micros: int
    known_charged_micros: int  # charged for the requests whose upstream cost is known

    @property
    def margin_micros(self) -> int | None:
        """Over the requests whose upstream cost is known; None when none is (unknown is
        never shown as zero)."""
        if self.upstream_micros is None:
            return None
        return self.known_charged_micros - self.upstream_micros


@dataclass(frozen=True)
class Ranked:
    name: str
    requests: int
    charged_micros: int


@dataclass(frozen=True)
class OrganizationFigures:
    posted_micros: int
    pending_micros: int
    members: int
    periods: list[PeriodFigures]
    top_members: list[Ranked]  # over 30 days
    top_models: list[Ranked]


def organization_figures(*, organization: Organization,
                         now: datetime | None = None) -> OrganizationFigures:
    now = now or timezone.now()
    wallet = Wallet.objects.filter(organization=organization).first()
    records = UsageRecord.objects.filter(organization=organization)
    periods = []
    for label, length in PERIODS:
        since = now - length
        sums = records.filter(created_at__gte=since).aggregate(
            requests=Count("id"),
            failed=Count("id", filter=~Q(status=UsageRecord.Status.OK)),
            charged=Sum("cost_micros"), upstream=Sum("upstream_cost_micros"),
            known_charged=Sum("cost_micros", filter=Q(upstream_cost_micros__isnull=False)),
            unknown=Count("id", filter=Q(upstream_cost_micros__isnull=True)),
            prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        money_in = (LedgerEntry.objects.filter(wallet=wallet, created_at__gte=since,
                                               amount_micros__gt=0)
                    .exclude(kind=LedgerEntry.Kind.CHARGE)
                    .aggregate(total=Sum("amount_micros"))["total"] if wallet else 0)
        periods.append(PeriodFigures(
            label=label, requests=sums["requests"], failed=sums["failed"],
            charged_micros=sums["charged"] or 0, upstream_micros=sums["upstream"],
            unknown_cost_requests=sums["unknown"], prompt_tokens=sums["prompt"] or 0,
            completion_tokens=sums["completion"] or 0, money_in_micros=money_in or 0,
            known_charged_micros=sums["known_charged"] or 0))
    month = records.filter(created_at__gte=now - PERIODS[-1][1])
    return OrganizationFigures(
        posted_micros=wallet.posted_micros if wallet else 0,
        pending_micros=wallet.pending_micros if wallet else 0,
        members=organization.memberships.count(),
        periods=periods,
        top_members=_ranked(month, "user__email"),
        top_models=_ranked(month, "model"))


def _ranked(records: QuerySet[UsageRecord], field: str) -> list[Ranked]:
    rows = (records.values(field).annotate(requests=Count("id"), charged=Sum("cost_micros"))
            .order_by("-charged", field)[:TOP])
    return [Ranked(row[field], row["requests"], row["charged"] or 0) for row in rows]
