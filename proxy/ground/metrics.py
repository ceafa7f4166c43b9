"""Prometheus metrics of this router process: the counters every room adds to (served at
/metrics by ``proxy.entry.metrics_endpoint``).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make serve`` sets it), every worker process of
the server keeps its counters and histograms in files there, and a scrape, whichever worker
answers it, adds up all of them: one target per instance, not per process. Without it the
counters are this process's own. The pending-holds and circuit gauges are read from the
database and Redis when scraped, so every instance reports the same shared numbers.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from bisect import bisect_left
from typing import Any, NamedTuple

from prometheus_client import (
    Counter,
    Histogram,
    multiprocess,
)

REQUESTS = Counter("router_requests", "API requests answered, by model, status and worker",
                   ["model", "status", "worker"])
LATENCY = Histogram("router_request_latency_seconds", "Time to the whole answer", ["model"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
TTFT = Histogram("router_time_to_first_token_seconds", "Time to the first output",
                 ["model"], buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TOKENS = Counter("router_tokens", "Tokens billed, by model and kind", ["model", "kind"])
CHARGED = Counter("router_charged_micros", "Micro-USD charged, by model", ["model"])
SETTLE_FAILURES = Counter("router_settle_failures", "Charges that could not be written as "
                          "computed, by what was done instead", ["fallback"])
REFUSALS_DROPPED = Counter("router_refusals_dropped", "Refused requests not counted for the "
                           "usage list (too many groups between two writes)")
USAGE_FLAGS = Counter("router_usage_flags", "Answers whose output passed the cap or whose "
                      "usage was not believed, by worker and flag", ["worker", "flag"])
UPSTREAM_ERRORS = Counter("router_upstream_errors", "Failed upstream attempts, by worker",
                          ["worker"])


class _CompletionSeries(NamedTuple):
    requests: Any
    prompt_tokens: Any
    completion_tokens: Any
    charged: Any
    latency: Any
    ttft: Any


# The labelled children of one (model, outcome, worker): ``.labels()`` hashes and locks on
# each call, six times per completion; the children themselves live as long as the metrics.
_completion_series: dict[tuple[str, str, str], _CompletionSeries] = {}
_refusal_series: dict[int, Any] = {}


def _series(model: str, outcome: str, worker: str) -> _CompletionSeries:
    key = (model, outcome, worker)
    series = _completion_series.get(key)
    if series is None:
        series = _CompletionSeries(
            REQUESTS.labels(model, outcome, worker), TOKENS.labels(model, "prompt"),
            TOKENS.labels(model, "completion"), CHARGED.labels(model), LATENCY.labels(model),
            TTFT.labels(model))
        _completion_series[key] = series
    return series


# Completions are added up here and written to the metrics at most FLUSH_S later (and
# before every scrape of this process): four counters and two histograms per completion
# cost 7.5 us in memory and 18.5 us with PROMETHEUS_MULTIPROC_DIR (a lock, os.getpid() and
# a write into the mmap file per value), where a tally costs a few additions. A scrape
# answered by another worker process sees this one's completions up to FLUSH_S late.
FLUSH_S = 1.0
_LATENCY_BOUNDS = tuple(LATENCY._upper_bounds)  # the buckets' bounds, +Inf last
_TTFT_BOUNDS = tuple(TTFT._upper_bounds)


class _Tally:
    """What the completions of one series added since the last flush; a histogram's
    observations as a count per bucket (the first bound at or above the value, as
    prometheus_client's ``observe`` picks it) and their sum."""

    __slots__ = ("charged", "completion_tokens", "latency", "latency_sum", "prompt_tokens",
                 "requests", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.requests = self.prompt_tokens = self.completion_tokens = self.charged = 0
        self.latency = [0] * len(_LATENCY_BOUNDS)
        self.ttft = [0] * len(_TTFT_BOUNDS)
        self.latency_sum = self.ttft_sum = 0.0

    def write(self, series: _CompletionSeries) -> None:
        for counter, amount in ((series.requests, self.requests),
                                (series.prompt_tokens, self.prompt_tokens),
                                (series.completion_tokens, self.completion_tokens),
                                (series.charged, self.charged)):
            if amount:
                counter.inc(amount)
        _add_observations(series.latency, self.latency, self.latency_sum)
        _add_observations(series.ttft, self.ttft, self.ttft_sum)


def _add_observations(histogram: Any, counts: list[int], total: float) -> None:
    # A labelled Histogram child keeps a value per bucket and one for the sum (what
    # ``observe`` adds to, one observation at a time); several at once go straight to
    # them. tests/proxy/test_metrics_tally.py holds this to what ``observe`` would show.
    if not any(counts):
        return
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


_tallies: dict[tuple[str, str, str], _Tally] = {}
# Completions are tallied in the event loop; a scrape flushes from the view's thread.
_tallies_lock = threading.Lock()
_flush_at = 0.0  # when the flush set for the tallies is due (monotonic); 0: none is set


def completion_observed(*, model: str, worker: str, outcome: str, prompt_tokens: int,
                        completion_tokens: int, charged_micros: int,
                        latency_ms: int | None, ttft_ms: int | None) -> None:
    global _flush_at
    key = (model, outcome, worker)
    with _tallies_lock:
        tally = _tallies.get(key)
        if tally is None:
            tally = _tallies[key] = _Tally()
        tally.requests += 1
        tally.prompt_tokens += prompt_tokens
        tally.completion_tokens += completion_tokens
        tally.charged += charged_micros
        if latency_ms is not None:
            seconds = latency_ms / 1000
            tally.latency[bisect_left(_LATENCY_BOUNDS, seconds)] += 1
            tally.latency_sum += seconds
        if ttft_ms is not None:
            seconds = ttft_ms / 1000
            tally.ttft[bisect_left(_TTFT_BOUNDS, seconds)] += 1
            tally.ttft_sum += seconds
        now = time.monotonic()
        if _flush_at and now < _flush_at + FLUSH_S:
            return  # the timer set for them writes these too
        # None set, or one overdue by a whole FLUSH_S: its event loop closed before it ran.
        _flush_at = now + FLUSH_S
    try:
        asyncio.get_running_loop().call_later(FLUSH_S, flush_metrics)
    except RuntimeError:  # no event loop here: written at once
        flush_metrics()


def flush_metrics() -> None:
    """Write the completions tallied so far to the metrics (their files, in multiprocess
    mode)."""
    global _tallies, _flush_at
    with _tallies_lock:
        tallies, _tallies = _tallies, {}
        _flush_at = 0.0
    for key, tally in tallies.items():
        tally.write(_series(*key))


def refusal_observed(*, status: int) -> None:
    child = _refusal_series.get(status)
    if child is None:
        child = _refusal_series[status] = REQUESTS.labels("", str(status), "")
    child.inc()


def multiprocess_dir() -> str:
    # The variable prometheus_client itself read when it was imported, to decide where
    # counters live (memory or files); read here too, so both always agree.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def process_exiting() -> None:
    """A worker process is stopping: drop its live gauges (its counters stay counted)."""
    flush_metrics()
    directory = multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(os.getpid(), directory)


