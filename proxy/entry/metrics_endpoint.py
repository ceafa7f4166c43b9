"""/metrics: this process's counters (``proxy.ground.metrics``), or with
``PROMETHEUS_MULTIPROC_DIR`` every worker process's added up, and gauges read at scrape
time from the database and Redis, served to staff and to ROUTER_METRICS_ALLOWED_NETWORKS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from ipaddress import ip_address, ip_network

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from accounts.two_factor.policy import second_factor_passed
from billing.models import Hold
from proxy.ground.metrics import flush_metrics, multiprocess_dir
from proxy.models import Worker
from proxy.upstream.breaker import breaker_state


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
    from proxy.ground.shared_state import close_redis_clients

    try:
        return {pk: await breaker_state(pk) for pk in worker_ids}
    finally:
        await close_redis_clients()


SHARED_STATE = _SharedState()
REGISTRY.register(SHARED_STATE)


def _registry() -> CollectorRegistry:
    directory = multiprocess_dir()
    if not directory:
        return REGISTRY
    # Every process's files, added up (live processes and those that exited alike: a
    # counter must not go down when a worker is replaced).
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(SHARED_STATE)
    return registry


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
    flush_metrics()  # this process's completions to the minute (the others' within FLUSH_S)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
