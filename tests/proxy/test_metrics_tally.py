"""Completions are tallied, then written to the metrics together: what a scrape shows is
what writing each completion on its own would have shown, at most FLUSH_S later (at once
for the process that answers the scrape), and nothing is lost to a flush running beside
the tallying."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.ground import metrics
from proxy.ground.metrics import completion_observed, flush_metrics

# Latencies and first tokens (ms) on the buckets' bounds, between them and past the last.
TIMES_MS = [None, 0, 1, 25, 50, 51, 100, 249, 250, 999, 1000, 59_999, 60_000, 400_000]


def _series_in(registry: CollectorRegistry) -> metrics._CompletionSeries:
    requests = Counter("r", "", ["model", "status", "worker"], registry=registry)
    tokens = Counter("t", "", ["model", "kind"], registry=registry)
    charged = Counter("c", "", ["model"], registry=registry)
    latency = Histogram("l", "", ["model"], registry=registry,
                        buckets=metrics.LATENCY._upper_bounds[:-1])
    ttft = Histogram("f", "", ["model"], registry=registry,
                     buckets=metrics.TTFT._upper_bounds[:-1])
    return metrics._CompletionSeries(requests.labels("m", "ok", "w"), tokens.labels("m", "p"),
                                     tokens.labels("m", "c"), charged.labels("m"),
                                     latency.labels("m"), ttft.labels("m"))


def test_a_tally_writes_what_observing_each_completion_would():
    one_by_one, tallied = CollectorRegistry(), CollectorRegistry()
    each, together = _series_in(one_by_one), _series_in(tallied)
    tally = metrics._Tally()
    for n, latency_ms in enumerate(TIMES_MS):
        ttft_ms = TIMES_MS[-1 - n]
        each.requests.inc()
        each.prompt_tokens.inc(n)
        each.completion_tokens.inc(2 * n)
        each.charged.inc(3 * n)
        tally.requests += 1
        tally.prompt_tokens += n
        tally.completion_tokens += 2 * n
        tally.charged += 3 * n
        for histogram, counts, ms, bounds in (
                (each.latency, tally.latency, latency_ms, metrics._LATENCY_BOUNDS),
                (each.ttft, tally.ttft, ttft_ms, metrics._TTFT_BOUNDS)):
            if ms is not None:
                histogram.observe(ms / 1000)
                counts[metrics.bisect_left(bounds, ms / 1000)] += 1
        if latency_ms is not None:
            tally.latency_sum += latency_ms / 1000
        if ttft_ms is not None:
            tally.ttft_sum += ttft_ms / 1000
    tally.write(together)

    def exposition(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines()
                if not line.startswith("#") and "_created" not in line]

    assert exposition(tallied) == exposition(one_by_one)
    assert any('l_bucket{le="0.05",model="m"} 4.0' in line for line in exposition(tallied))


@pytest.fixture(autouse=True)
def _nothing_tallied_before() -> None:
    flush_metrics()  # and no timer due: what an earlier test tallied is written


FAMILIES = (metrics.REQUESTS, metrics.TOKENS, metrics.CHARGED, metrics.LATENCY, metrics.TTFT)


def _value(name: str, **labels: str) -> float:
    # These metrics alone: the registry's scrape would also read the database's gauges.
    return next((sample.value for metric in FAMILIES for family in metric.collect()
                 for sample in family.samples
                 if sample.name == name and sample.labels == labels), 0.0)


def _completion(model: str, **overrides: int | None) -> None:
    fields: dict = {"prompt_tokens": 3, "completion_tokens": 5, "charged_micros": 7,
                    "latency_ms": 120, "ttft_ms": 30, **overrides}
    completion_observed(model=model, worker="w", outcome="ok", **fields)


def test_outside_an_event_loop_a_completion_is_written_at_once():
    model = f"m-{uuid.uuid4().hex}"
    _completion(model)
    assert _value("router_requests_total", model=model, status="ok", worker="w") == 1
    assert _value("router_charged_micros_total", model=model) == 7
    assert _value("router_request_latency_seconds_bucket", model=model, le="0.25") == 1
    assert _value("router_time_to_first_token_seconds_sum", model=model) == 0.03


def test_in_the_event_loop_completions_are_written_together_by_one_timer(monkeypatch):
    monkeypatch.setattr(metrics, "FLUSH_S", 0.05)
    model = f"m-{uuid.uuid4().hex}"

    async def scenario() -> tuple[float, float]:
        for _ in range(10):
            _completion(model)
        _completion(model, latency_ms=None, ttft_ms=None)
        # One timer for the window, whatever the number of completions in it.
        timers = len(asyncio.get_running_loop()._scheduled)
        before = _value("router_requests_total", model=model, status="ok", worker="w")
        await asyncio.sleep(0.2)
        return before, timers

    before, timers = asyncio.run(scenario())
    assert before == 0  # not yet written
    assert timers == 1
    assert _value("router_requests_total", model=model, status="ok", worker="w") == 11
    assert _value("router_tokens_total", model=model, kind="completion") == 55
    assert _value("router_request_latency_seconds_count", model=model) == 10


def test_a_scrape_flushes_this_processs_tally_first():
    model = f"m-{uuid.uuid4().hex}"

    async def scenario() -> None:
        _completion(model)
        flush_metrics()  # what /metrics does before it reads

    asyncio.run(scenario())
    assert _value("router_requests_total", model=model, status="ok", worker="w") == 1


def test_nothing_is_lost_to_flushes_running_beside_the_tallying():
    model = f"m-{uuid.uuid4().hex}"
    per_thread, threads = 2_000, 4
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            flush_metrics()

    def tallier() -> None:
        for _ in range(per_thread):
            _completion(model, latency_ms=10, ttft_ms=None)

    flushing = threading.Thread(target=flusher)
    flushing.start()
    workers = [threading.Thread(target=tallier) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    flushing.join()
    flush_metrics()
    total = per_thread * threads
    assert _value("router_requests_total", model=model, status="ok", worker="w") == total
    assert _value("router_tokens_total", model=model, kind="prompt") == 3 * total
    assert _value("router_request_latency_seconds_bucket", model=model, le="0.05") == total


def test_a_tally_whose_loop_closed_before_its_timer_ran_is_written_by_the_next_loop(
        monkeypatch):
    monkeypatch.setattr(metrics, "FLUSH_S", 0.05)
    model = f"m-{uuid.uuid4().hex}"

    async def one() -> None:
        _completion(model)

    asyncio.run(one())  # the loop closes with the timer set for the tally
    assert _value("router_requests_total", model=model, status="ok", worker="w") == 0

    async def later() -> None:
        await asyncio.sleep(0.15)  # the lost timer is overdue
        _completion(model)
        await asyncio.sleep(0.1)

    asyncio.run(later())
    assert _value("router_requests_total", model=model, status="ok", worker="w") == 2
