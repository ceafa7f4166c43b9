"""Prometheus metrics of this router process: the counters every room adds to (served at
/metrics by ``proxy.entry.metrics_endpoint``).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make serve`` sets it), every worker process of
the server keeps its counters and histograms in files there, and a scrape, whichever worker
answers it, adds up all of them: one target per instance, not per process. Without it the
counters are this process's own. The pending-holds and circuit gauges are read from the
database and Redis when scraped, so every instance reports the same shared numbers.
"""

from __future__ import annotations

import os
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


def completion_observed(*, model: str, worker: str, outcome: str, prompt_tokens: int,
                        completion_tokens: int, charged_micros: int,
                        latency_ms: int | None, ttft_ms: int | None) -> None:
    series = _series(model, outcome, worker)
    series.requests.inc()
    series.prompt_tokens.inc(prompt_tokens)
    series.completion_tokens.inc(completion_tokens)
    series.charged.inc(charged_micros)
    if latency_ms is not None:
        series.latency.observe(latency_ms / 1000)
    if ttft_ms is not None:
        series.ttft.observe(ttft_ms / 1000)


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
    directory = multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(os.getpid(), directory)


