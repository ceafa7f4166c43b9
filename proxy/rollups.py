"""Roll-ups of the fleet (per worker), for the admin's dashboard.

``billing.UsageRollup`` sums usage per user, key and model, with no worker and no latency;
this sums it per worker and model, with latency and time-to-first-token histograms, so the
dashboard reads percentiles over any window from a few hundred rows instead of the records.
"""

from __future__ import annotations

from django.db import models

__all__ = ["WorkerRollup"]

# Upper bounds (exclusive) of the histogram buckets, in milliseconds: ten a decade from
# 10 ms to 1,000 s, so a percentile read off them is within a bucket's width (26 %) of the
# exact one. Bucket i counts values v with BOUNDS_MS[i-1] <= v < BOUNDS_MS[i] (PostgreSQL's
# width_bucket, and bisect_right): bucket 0 is under 10 ms, the last one 1,000 s and more.
# Changing them means recomputing every row: the stored counts are positions in this list.
BOUNDS_MS: tuple[int, ...] = tuple(round(10 ** (1 + k / 10)) for k in range(51))
BUCKETS = len(BOUNDS_MS) + 1


class WorkerRollup(models.Model):
    """Usage summed per hour or per day (UTC), worker and model.

    Recomputed from the usage records a window at a time (``proxy.rollup_service``), never
    incremented, so running the job twice, or late, gives the same numbers. The histograms
    are sparse: ``{"<bucket index>": count}`` for the buckets that counted anything.
    """

    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    period = models.CharField(max_length=4, choices=Period.choices)
    bucket_start = models.DateTimeField()
    worker = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    failed_requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    # The charge of the requests whose upstream cost is known: the margin is this less
    # upstream_cost_micros, exact over the known part; the unknown part is only counted.
    known_cost_micros = models.BigIntegerField(default=0)
    upstream_cost_micros = models.BigIntegerField(default=0)
    unknown_cost_requests = models.PositiveIntegerField(default=0)
    latency_hist = models.JSONField(default=dict)
    ttft_hist = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["period", "bucket_start"],
                                name="proxy_workerrollup_bucket")]
        constraints = [
            models.UniqueConstraint(fields=["period", "bucket_start", "worker", "model"],
                                    name="proxy_workerrollup_one_row_per_bucket"),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:00} {self.worker} {self.model}"
