"""Margin: what we charged minus what the upstream charged us, in integer micro-USD.

A usage record's upstream cost is NULL when its worker had no cost price (or the request
was voided): that cost is *unknown*, never zero. Every figure here keeps the two apart: the
margin is computed over the requests whose cost is known, and the requests of unknown cost
are counted, with what they were charged, beside it.

Windows are read from two places, exactly: whole UTC days before today from the daily
roll-ups (``UsageRollup``, kept by ``billing.services.rollups``), and the rest (today, and a
window's partial first or last day) from the usage records. The roll-ups have no worker, so
``by="worker"`` reads the records for the whole window.

For the dashboard::

    margin_by(by="model", since=now - timedelta(days=7))      -> list[Margin], by key
    margin_by(by="day", since=..., until=...)                 -> keys are ``date``s (UTC)
    margin_by(by="user", since=...)                           -> keys are user ids
    margin_by(by="worker", since=...)                         -> keys are worker names
    margin_total(since=..., until=...)                        -> one Margin (key "all")
    usage_with_margin(UsageRecord.objects.filter(...))        -> each row's ``margin_micros``
    request_margin_micros(record)                             -> int | None
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from django.db.models import BigIntegerField as _BigInt
from django.db.models import Count, ExpressionWrapper, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from billing.models import UsageRecord, UsageRollup

Dimension = Literal["model", "worker", "user", "day"]
DIMENSIONS: tuple[Dimension, ...] = ("model", "worker", "user", "day")

_UNKNOWN = Q(upstream_cost_micros__isnull=True)


@dataclass(frozen=True)
class Margin:
    """The money of one group of requests (a model, a worker, a user, a UTC day)."""

    key: Any  # the model or worker name, the user id, the date; "all" for a total
    requests: int = 0
    charged_micros: int = 0  # what every request of the group was charged
    upstream_cost_micros: int = 0  # the upstream cost of the requests whose cost is known
    unknown_cost_requests: int = 0  # requests whose upstream cost is unknown
    unknown_cost_charged_micros: int = 0  # what those were charged

    @property
    def known_cost_requests(self) -> int:
        return self.requests - self.unknown_cost_requests

    @property
    def known_charged_micros(self) -> int:
        """What the requests of known cost were charged: the margin's revenue."""
        return self.charged_micros - self.unknown_cost_charged_micros

    @property
    def margin_micros(self) -> int | None:
        """Charged minus upstream cost over the requests whose cost is known; None when the
        cost of none is known (unknown, not zero)."""
        if self.known_cost_requests == 0:
            return None
        return self.known_charged_micros - self.upstream_cost_micros

    def __add__(self, other: Margin) -> Margin:
        return replace(
            self, requests=self.requests + other.requests,
            charged_micros=self.charged_micros + other.charged_micros,
            upstream_cost_micros=self.upstream_cost_micros + other.upstream_cost_micros,
            unknown_cost_requests=self.unknown_cost_requests + other.unknown_cost_requests,
            unknown_cost_charged_micros=(self.unknown_cost_charged_micros
                                         + other.unknown_cost_charged_micros))


def request_margin_micros(record: UsageRecord) -> int | None:
    """One request's margin: its charge minus its upstream cost; None when that is unknown."""
    if record.upstream_cost_micros is None:
        return None
    return record.cost_micros - record.upstream_cost_micros


def usage_with_margin(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
    """``records`` with ``margin_micros`` on each row (NULL, i.e. None, when its cost is
    unknown: SQL's NULL arithmetic keeps it unknown)."""
    return records.annotate(margin_micros=ExpressionWrapper(
        F("cost_micros") - F("upstream_cost_micros"), output_field=_BigInt()))


def margin_by(*, by: Dimension, since: datetime, until: datetime | None = None,
              now: datetime | None = None) -> list[Margin]:
    """Margin per ``by`` over [since, until) (until: now), sorted by key."""
    if by not in DIMENSIONS:
        raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}.")
    now = now or timezone.now()
    until = until or now
    groups: dict[Any, Margin] = {}
    for part in _parts(by, since, until, now):
        for margin in part:
            groups[margin.key] = groups[margin.key] + margin if margin.key in groups else margin
    return sorted(groups.values(), key=lambda margin: margin.key)


def margin_total(*, since: datetime, until: datetime | None = None,
                 now: datetime | None = None) -> Margin:
    """All the requests of [since, until) as one Margin (key "all")."""
    total = Margin("all")
    for margin in margin_by(by="day", since=since, until=until, now=now):
        total += replace(margin, key="all")
    return total


def _parts(by: Dimension, since: datetime, until: datetime, now: datetime
           ) -> Iterable[Iterable[Margin]]:
    """Whole days before today from the daily roll-ups, the rest from the records."""
    if since >= until:
        return []
    today = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    first_day = datetime.combine(since.astimezone(UTC).date(), time(), tzinfo=UTC)
    if first_day < since:
        first_day += timedelta(days=1)
    last_day = min(datetime.combine(until.astimezone(UTC).date(), time(), tzinfo=UTC), today)
    if by == "worker" or first_day >= last_day:
        return [_from_records(by, since, until)]
    parts = [_from_rollups(by, first_day, last_day)]
    if since < first_day:
        parts.append(_from_records(by, since, first_day))
    if last_day < until:
        parts.append(_from_records(by, last_day, until))
    return parts


_RECORD_KEYS = {"model": "model", "worker": "worker", "user": "user_id", "day": "day"}
_ROLLUP_KEYS = {"model": "model", "user": "user_id", "day": "bucket_start"}


def _from_records(by: Dimension, since: datetime, until: datetime) -> list[Margin]:
    records = UsageRecord.objects.filter(created_at__gte=since, created_at__lt=until)
    if by == "day":
        records = records.annotate(day=TruncDay("created_at", tzinfo=UTC))
    rows = (records.values(_RECORD_KEYS[by])
            .annotate(requests=Count("id"), charged=Sum("cost_micros"),
                      upstream=Sum("upstream_cost_micros"),
                      unknown=Count("id", filter=_UNKNOWN),
                      unknown_charged=Sum("cost_micros", filter=_UNKNOWN))
            .order_by())
    return [_margin(by, row[_RECORD_KEYS[by]], row["requests"], row) for row in rows]


def _from_rollups(by: Dimension, since: datetime, until: datetime) -> list[Margin]:
    rows = (UsageRollup.objects
            .filter(period=UsageRollup.Period.DAY, bucket_start__gte=since,
                    bucket_start__lt=until)
            .values(_ROLLUP_KEYS[by])
            .annotate(count=Sum("requests"), charged=Sum("cost_micros"),
                      upstream=Sum("upstream_cost_micros"),
                      unknown=Sum("unknown_cost_requests"),
                      unknown_charged=Sum("unknown_cost_charged_micros"))
            .order_by())
    return [_margin(by, row[_ROLLUP_KEYS[by]], row["count"], row) for row in rows]


def _margin(by: Dimension, key: Any, requests: int, row: dict[str, Any]) -> Margin:
    if by == "day":
        key = _day(key)
    return Margin(key=key, requests=requests or 0, charged_micros=row["charged"] or 0,
                  upstream_cost_micros=row["upstream"] or 0,
                  unknown_cost_requests=row["unknown"] or 0,
                  unknown_cost_charged_micros=row["unknown_charged"] or 0)


def _day(moment: datetime | date) -> date:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).date()
    return moment
