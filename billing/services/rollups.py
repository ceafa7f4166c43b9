"""Hourly and daily usage roll-ups, recomputed from the usage records a window at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from billing.models import UsageRecord, UsageRollup

# Any number taken by nothing else: serialises roll-up runs on PostgreSQL.
_ADVISORY_LOCK = 7_400_101


def _floor(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == UsageRollup.Period.DAY else moment


def usage_rollup(*, since: datetime, until: datetime | None = None) -> int:
    """Recompute every hourly and daily bucket that overlaps [since, until).

    Each period's buckets in the window are deleted and inserted again from the records in
    one transaction, so a run is idempotent and readers never see half a bucket. Returns
    the number of rows written.
    """
    until = until or timezone.now()
    written = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        for period, trunc in ((UsageRollup.Period.HOUR, TruncHour),
                              (UsageRollup.Period.DAY, TruncDay)):
            start = _floor(since, period)
            end = _floor(until, period) + (timedelta(days=1) if period == "day"
                                           else timedelta(hours=1))
            UsageRollup.objects.filter(period=period, bucket_start__gte=start,
                                       bucket_start__lt=end).delete()
            rows = (
                UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
                .annotate(bucket=trunc("created_at", tzinfo=UTC))
                .values("bucket", "user_id", "organization_id", "api_key_id", "model")
                .annotate(requests=Count("id"),
                          failed=Count("id", filter=~Q(status=UsageRecord.Status.OK)),
                          prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
                          cached=Sum("cached_tokens"), cost=Sum("cost_micros"),
                          # NULL (unknown) costs are left out of the sum, and counted.
                          upstream=Sum("upstream_cost_micros"),
                          unknown=Count("id", filter=Q(upstream_cost_micros__isnull=True)),
                          unknown_charged=Sum("cost_micros",
                                              filter=Q(upstream_cost_micros__isnull=True)))
            )
            rollups = [
                UsageRollup(period=period, bucket_start=row["bucket"], user_id=row["user_id"],
                            organization_id=row["organization_id"],
                            api_key_id=row["api_key_id"], model=row["model"],
                            requests=row["requests"], failed_requests=row["failed"],
                            prompt_tokens=row["prompt"], completion_tokens=row["completion"],
                            cached_tokens=row["cached"], cost_micros=row["cost"],
                            upstream_cost_micros=row["upstream"] or 0,
                            unknown_cost_requests=row["unknown"],
                            unknown_cost_charged_micros=row["unknown_charged"] or 0)
                for row in rows
            ]
            UsageRollup.objects.bulk_create(rollups, batch_size=1000)
            written += len(rollups)
    return written


def usage_rollup_recent(*, now: datetime | None = None) -> int:
    """What beat runs: from the last hour already rolled up (at least the last two hours,
    and through them today and yesterday) to now.

    Starting from the latest hourly bucket, not a fixed window, catches up after the job
    did not run for a while (beat stopped overnight, a deploy): the records written since
    its last run are rolled up whenever it runs again. No bucket yet: everything.
    """
    now = now or timezone.now()
    latest = UsageRollup.objects.filter(period=UsageRollup.Period.HOUR).aggregate(
        latest=Max("bucket_start"))["latest"]
    if latest is None:
        latest = UsageRecord.objects.aggregate(first=Min("created_at"))["first"] or now
    return usage_rollup(since=min(latest, now - timedelta(hours=2)), until=now)
