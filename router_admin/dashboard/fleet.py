"""Requests, errors, tokens, charge, upstream cost and latency by worker and model, all
from one read of the fleet roll-ups (a few hundred rows whatever the traffic)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from proxy.rollups import BOUNDS_MS, BUCKETS, WorkerRollup
from router_admin.dashboard.periods import Window


@dataclass
class Totals:
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    known_cost_micros: int = 0
    upstream_cost_micros: int = 0
    unknown_cost_requests: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    ttft: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, row: dict, latency: list[tuple[int, int]],
            ttft: list[tuple[int, int]]) -> None:
        """A roll-up row, its histograms given as (bucket index, count) pairs."""
        self.requests += row["requests"]
        self.failed += row["failed_requests"]
        self.prompt_tokens += row["prompt_tokens"]
        self.completion_tokens += row["completion_tokens"]
        self.cost_micros += row["cost_micros"]
        self.known_cost_micros += row["known_cost_micros"]
        self.upstream_cost_micros += row["upstream_cost_micros"]
        self.unknown_cost_requests += row["unknown_cost_requests"]
        for hist, pairs in ((self.latency, latency), (self.ttft, ttft)):
            for index, count in pairs:
                hist[index] += count

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def margin_micros(self) -> int:
        """Over the requests whose upstream cost is known (all of them when none is not)."""
        return self.known_cost_micros - self.upstream_cost_micros


@dataclass(frozen=True)
class Fleet:
    total: Totals
    by_worker: dict[str, Totals]
    by_model: dict[str, Totals]
    by_bucket: dict[datetime, Totals]


def fleet_read(window: Window) -> Fleet:
    rows = WorkerRollup.objects.filter(period=window.unit,
                                       bucket_start__gte=window.start).values(
        "bucket_start", "worker", "model", "requests", "failed_requests", "prompt_tokens",
        "completion_tokens", "cost_micros", "known_cost_micros", "upstream_cost_micros",
        "unknown_cost_requests", "latency_hist", "ttft_hist")
    total = Totals()
    by_worker: dict[str, Totals] = defaultdict(Totals)
    by_model: dict[str, Totals] = defaultdict(Totals)
    by_bucket: dict[datetime, Totals] = defaultdict(Totals)
    for row in rows:
        # Each row counts in four totals: its histograms' keys are parsed once, not four
        # times (the adds were a third of the dashboard's time at 690 rows a day).
        latency = [(int(index), count) for index, count in row["latency_hist"].items()]
        ttft = [(int(index), count) for index, count in row["ttft_hist"].items()]
        for totals in (total, by_worker[row["worker"]], by_model[row["model"]],
                       by_bucket[row["bucket_start"]]):
            totals.add(row, latency, ttft)
    return Fleet(total=total, by_worker=dict(by_worker), by_model=dict(by_model),
                 by_bucket=dict(by_bucket))


def percentile_range(hist: list[int], fraction: float) -> tuple[int, int | None] | None:
    """The histogram bucket holding the nearest-rank percentile, as [low, high) in ms (high
    None for the open last bucket); None when nothing was counted."""
    count = sum(hist)
    if not count:
        return None
    rank = max(1, -(-int(fraction * 1000) * count // 1000))  # ceil(fraction * count)
    seen = 0
    for index, n in enumerate(hist):
        seen += n
        if seen >= rank:
            low = BOUNDS_MS[index - 1] if index else 0
            return low, BOUNDS_MS[index] if index < len(BOUNDS_MS) else None
    return None  # unreachable: seen reaches count
