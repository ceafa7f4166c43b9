"""Reads for staff pages: what each worker served recently, from the usage records."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from billing.models import UsageRecord

RECENT_WINDOW = timedelta(minutes=15)
# Latencies read per worker for its median: the newest ones. Enough for a stable p50, and
# a busy worker cannot make the page read thousands of rows.
LATENCY_SAMPLE = 500


@dataclass(frozen=True)
class WorkerStats:
    requests: int = 0
    upstream_errors: int = 0
    p50_latency_ms: int | None = None  # of completed (status ok) requests

    @property
    def error_rate(self) -> float | None:
        """Upstream errors / all requests; None when there were none."""
        return self.upstream_errors / self.requests if self.requests else None


def workers_recent_stats(*, names: Collection[str], window: timedelta = RECENT_WINDOW,
                         now: datetime | None = None) -> dict[str, WorkerStats]:
    """Requests, upstream errors and median latency per worker name over ``window``, in two
    queries whatever the number of workers. A name with no usage gets ``WorkerStats()``."""
    names = sorted(set(names))
    if not names:
        return {}
    since = (now or timezone.now()) - window
    recent = UsageRecord.objects.filter(worker__in=names, created_at__gte=since)
    counts = {
        row["worker"]: row
        for row in recent.order_by().values("worker").annotate(
            requests=Count("pk"),
            upstream_errors=Count("pk", filter=Q(status=UsageRecord.Status.UPSTREAM_ERROR)),
        )
    }
    latencies: dict[str, list[int]] = defaultdict(list)
    sample = (
        recent.filter(status=UsageRecord.Status.OK, latency_ms__isnull=False)
        .annotate(newest=Window(RowNumber(), partition_by=F("worker"),
                                order_by=F("created_at").desc()))
        .filter(newest__lte=LATENCY_SAMPLE)
        .values_list("worker", "latency_ms")
    )
    for worker, latency_ms in sample:
        latencies[worker].append(latency_ms)
    stats = {}
    for name in names:
        row = counts.get(name)
        if row is None:
            stats[name] = WorkerStats()
            continue
        sampled = latencies.get(name)
        stats[name] = WorkerStats(
            requests=row["requests"], upstream_errors=row["upstream_errors"],
            p50_latency_ms=statistics.median_low(sampled) if sampled else None,
        )
    return stats
