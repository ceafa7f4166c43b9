"""Prometheus metrics of this router process, served at /metrics to staff and to the
networks in ROUTER_METRICS_ALLOWED_NETWORKS.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make serve`` sets it), every worker process of
the server keeps its counters and histograms in files there, and a scrape, whichever worker
answers it, adds up all of them: one target per instance, not per process. Without it the
counters are this process's own. The pending-holds and circuit gauges are read from the
database and Redis when scraped, so every instance reports the same shared numbers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from accounts.two_factor.policy import second_factor_passed
from billing.models import Hold
from proxy.breaker import breaker_state
from proxy.models import Worker

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


class _SharedState(Collector):
    """Gauges read at scrape time: holds pending (count and micro-USD), circuit states."""

    def describe(self) -> list[GaugeMetricFamily]:
        # Without this the registry would call collect(), and query, when registering.
        return [GaugeMetricFamily("router_holds_pending", ""),
                GaugeMetricFamily("router_holds_pending_micros", ""),
                GaugeMetricFamily("router_circuit_open", "", labels=["worker"])]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = Hold.objects.filter(status=Hold.Status.PENDING).aggregate(
            n=Count("pk"), micros=Sum("amount_micros"))
        holds = GaugeMetricFamily("router_holds_pending", "Holds of requests in flight")
        holds.add_metric([], pending["n"] or 0)
        yield holds
        money = GaugeMetricFamily("router_holds_pending_micros", "Micro-USD held in flight")
        money.add_metric([], pending["micros"] or 0)
        yield money
        circuits = GaugeMetricFamily("router_circuit_open",
                                     "1 when a worker's circuit is open or half-open",
                                     labels=["worker"])
        workers = list(Worker.objects.filter(enabled=True).values_list("pk", "name"))
        states = asyncio.run(_states([pk for pk, _ in workers]))
        for pk, name in workers:
            circuits.add_metric([name], 0 if states[pk] == "closed" else 1)
        yield circuits


async def _states(worker_ids: list[int]) -> dict[int, str]:
    from proxy.shared_state import close_redis_clients

    try:
        return {pk: await breaker_state(pk) for pk in worker_ids}
    finally:
        await close_redis_clients()


SHARED_STATE = _SharedState()
REGISTRY.register(SHARED_STATE)


def _multiprocess_dir() -> str:
    # The variable prometheus_client itself read when it was imported, to decide where
    # counters live (memory or files); read here too, so both always agree.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def _registry() -> CollectorRegistry:
    directory = _multiprocess_dir()
    if not directory:
        return REGISTRY
    # Every process's files, added up (live processes and those that exited alike: a
    # counter must not go down when a worker is replaced).
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(SHARED_STATE)
    return registry


def process_exiting() -> None:
    """A worker process is stopping: drop its live gauges (its counters stay counted)."""
    directory = _multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(os.getpid(), directory)


def _allowed(request: HttpRequest) -> bool:
    # Staff as the admin knows them: with the second factor too, where it is required.
    if (request.user.is_authenticated and request.user.is_staff
            and second_factor_passed(request.user)):
        return True
    try:
        address = ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ip_network(cidr, strict=False)
               for cidr in settings.ROUTER_METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
