"""Usage sums from the cheapest source for each stretch of time: the daily roll-ups for the
days the roll-ups are complete for, the hourly roll-ups up to the roll-up job's mark
(``UsageRollupMark``), and the usage records themselves after it.

A user's or an organization's figures for today (spend, requests, per model, per key) then
read at most an hour or so of records whatever the day's traffic, and stay exact to the
last request: the mark is an hour before which every record is counted in the roll-ups.
Before the job's first run (no mark), the days before today are read from their daily
roll-ups and today from the records, as the job recomputes today and yesterday on every
run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDay

from billing.models import UsageRecord, UsageRollup, UsageRollupMark

SUM_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_micros")
_ROLLUP_SUMS = {"requests": Sum("requests"), "prompt_tokens": Sum("prompt_tokens"),
                "completion_tokens": Sum("completion_tokens"), "cost_micros": Sum("cost_micros")}
_RECORD_SUMS = {"requests": Count("id"), "prompt_tokens": Sum("prompt_tokens"),
                "completion_tokens": Sum("completion_tokens"), "cost_micros": Sum("cost_micros")}

Sums = dict[str, int]


def today_start(now: datetime) -> datetime:
    """The start of ``now``'s UTC day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Spans:
    """[since, days_until) from daily roll-ups, [days_until, hours_until) from hourly
    roll-ups, [hours_until, now] from the records."""

    since: datetime
    days_until: datetime
    hours_until: datetime


def spans(since: datetime, now: datetime) -> Spans:
    """Where to read each part of [since, now]; ``since`` is a UTC midnight."""
    mark = (UsageRollupMark.objects.filter(pk=1)
            .values_list("complete_before", flat=True).first())
    if mark is None:
        days_until = hours_until = max(since, today_start(now))
    else:
        # A mark ahead of ``now`` (a clock behind the job's, a figure asked for the past)
        # vouches for the hours before ``now`` all the same.
        mark = min(mark, now.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
        days_until = max(since, today_start(mark))
        hours_until = max(days_until, mark)
    return Spans(since=since, days_until=days_until, hours_until=hours_until)


def usage_sums(rollups: QuerySet[UsageRollup], records: QuerySet[UsageRecord], *,
               since: datetime, now: datetime, by: Sequence[str] = (),
               per_day: bool = False) -> dict[tuple, Sums]:
    """The sums of ``records`` (and of ``rollups``, the same owner's roll-ups, of either
    period) from ``since`` to ``now``, per ``by`` (fields both have), and per UTC day first
    when ``per_day``: keys are tuples of those values."""
    where = spans(since, now)
    totals: dict[tuple, Sums] = defaultdict(lambda: dict.fromkeys(SUM_FIELDS, 0))
    parts: list[tuple[QuerySet, dict, str]] = []
    if where.days_until > where.since:
        parts.append((rollups.filter(period=UsageRollup.Period.DAY,
                                     bucket_start__gte=where.since,
                                     bucket_start__lt=where.days_until),
                      _ROLLUP_SUMS, "bucket_start"))
    if where.hours_until > where.days_until:
        parts.append((rollups.filter(period=UsageRollup.Period.HOUR,
                                     bucket_start__gte=where.days_until,
                                     bucket_start__lt=where.hours_until),
                      _ROLLUP_SUMS, "bucket_start"))
    parts.append((records.filter(created_at__gte=where.hours_until), _RECORD_SUMS,
                  "created_at"))
    for source, sums, moment in parts:
        source = source.order_by()
        group = list(by)
        if per_day:
            source = source.annotate(day=TruncDay(moment, tzinfo=UTC))
            group.insert(0, "day")
        rows: Iterable[dict] = (source.values(*group).annotate(**sums) if group
                                else [source.aggregate(**sums)])
        for row in rows:
            key = tuple(_day(row[name]) if name == "day" else row[name] for name in group)
            bucket = totals[key]
            for name in SUM_FIELDS:
                bucket[name] += row[name] or 0
    return totals


def _day(moment: datetime | date) -> date:
    return moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment


def days_back(now: datetime, days: int) -> datetime:
    """The start of the last ``days`` UTC days, today included."""
    return today_start(now) - timedelta(days=days - 1)
