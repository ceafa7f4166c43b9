"""Several workers per model: weights, priority tiers, failover, capacity, breakers.

Real local servers play the upstreams; the router is served by uvicorn in this process.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import openai
import pytest

from billing.models import Hold, LedgerEntry, UsageRecord
from proxy.ground.cache import clear_all_caches
from proxy.models import Worker, WorkerModel
from proxy.selectors import targets_for_model
from proxy.upstream.breaker import breaker_state
from tests.concurrency import run_concurrently
from tests.proxy.upstream import UpstreamServer

MESSAGES = [{"role": "user", "content": "Route me."}]


@pytest.fixture
def servers() -> Iterator[Callable[..., UpstreamServer]]:
    started: list[UpstreamServer] = []

    def start(**behaviour) -> UpstreamServer:
        server = UpstreamServer(**behaviour).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def add_worker(model_price) -> Callable[..., Worker]:
    def add(name: str, base_url: str, **fields) -> Worker:
        worker = Worker.objects.create(name=name, kind="openai", base_url=base_url, **fields)
        WorkerModel.objects.create(worker=worker, model="test-model",
                                   upstream_model="gpt-4o-mini")
        clear_all_caches()
        return worker

    return add


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more


def _call(client: openai.OpenAI, **extra) -> object:
    return client.chat.completions.create(model="test-model", messages=MESSAGES,
                                          max_tokens=10, **extra)


def test_each_target_carries_the_cap_field_its_worker_reads(add_worker):
    add_worker("llama", "http://llama.example/v1")
    add_worker("o-series", "https://o.example/v1", cap_field="max_completion_tokens")

    targets = asyncio.run(targets_for_model("test-model"))

    assert {t.worker_name: t.cap_field for t in targets} == {
        "llama": "max_tokens", "o-series": "max_completion_tokens"}


def test_traffic_splits_by_weight_inside_a_tier(servers, add_worker, make_key, client_for):
    heavy, light = servers(), servers()
    add_worker("heavy", heavy.base_url, weight=3)
    add_worker("light", light.base_url, weight=1)
    client = client_for(make_key(credit_micros=10_000_000)[1])

    results = run_concurrently(lambda: _call(client), [() for _ in range(1000)], threads=16)

    assert not [r for r in results if isinstance(r, Exception)][:1]
    # 750 expected; 50 is 3.6 standard deviations of a fair 3:1 split of 1000.
    assert abs(len(heavy.bodies) - 750) <= 50, (len(heavy.bodies), len(light.bodies))
    assert len(heavy.bodies) + len(light.bodies) == 1000


def test_a_lower_tier_takes_traffic_only_while_the_higher_one_is_unavailable(
    servers, add_worker, make_key, client_for
):
    high, low = servers(), servers()
    primary = add_worker("high", high.base_url, priority=10)
    add_worker("low", low.base_url, priority=0)
    client = client_for(make_key()[1])

    for _ in range(10):
        _call(client)
    assert (len(high.bodies), len(low.bodies)) == (10, 0)

    Worker.objects.filter(pk=primary.pk).update(draining=True)
    clear_all_caches()
    for _ in range(5):
        _call(client)
    assert (len(high.bodies), len(low.bodies)) == (10, 5)

    Worker.objects.filter(pk=primary.pk).update(draining=False)
    clear_all_caches()
    for _ in range(5):
        _call(client)
    assert (len(high.bodies), len(low.bodies)) == (15, 5)


def test_with_a_failing_top_worker_every_request_still_succeeds_and_is_charged_once(
    servers, add_worker, make_key, client_for, settings, router
):
    settings.ROUTER_BREAKER_FAILURES = 5
    broken, healthy = servers(status=500), servers()
    add_worker("broken", broken.base_url, priority=10)
    add_worker("healthy", healthy.base_url, priority=0)
    client = client_for(make_key()[1])

    for stream in [False, True] * 10:
        if stream:
            assert list(_call(client, stream=True))
        else:
            assert _call(client).choices[0].message.content
    router.drain()

    assert len(healthy.bodies) == 20
    # The broken worker was tried until its circuit opened, then skipped.
    assert len(broken.bodies) == 5
    assert LedgerEntry.objects.filter(kind="charge").count() == 20
    assert UsageRecord.objects.filter(worker="healthy", status="ok").count() == 20
    assert not Hold.objects.filter(status="pending").exists()


def test_at_capacity_the_extra_requests_wait_briefly_then_get_503_and_pay_nothing(
    servers, add_worker, make_key, client_for, settings, router
):
    settings.ROUTER_CAPACITY_WAIT_MS = 300
    slow = servers(first_byte_delay=1.5)
    add_worker("slow", slow.base_url, max_concurrency=2)
    client = client_for(make_key()[1])

    started = time.monotonic()
    results = run_concurrently(lambda: _call(client), [() for _ in range(5)], threads=5)
    router.drain()

    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(refused) == 3, results
    assert all(r.status_code == 503 and r.code == "no_available_workers" for r in refused)
    assert len(slow.bodies) == 2
    assert time.monotonic() - started < 5
    assert LedgerEntry.objects.filter(kind="charge").count() == 2
    assert set(UsageRecord.objects.filter(status="upstream_error")
               .values_list("cost_micros", flat=True)) == {0}
    assert not Hold.objects.filter(status="pending").exists()


def test_the_breaker_opens_after_the_failures_skips_the_worker_and_closes_after_a_good_trial(
    servers, add_worker, make_key, client_for, settings, live_router
):
    settings.ROUTER_BREAKER_FAILURES = 3
    settings.ROUTER_BREAKER_COOLDOWN_SECONDS = 1
    flaky, backup = servers(status=500), servers()
    worker = add_worker("flaky", flaky.base_url, priority=10)
    add_worker("backup", backup.base_url, priority=0)
    client = client_for(make_key()[1])

    def state() -> str:
        return asyncio.run_coroutine_threadsafe(breaker_state(worker.pk),
                                                live_router._loop).result(5)

    for _ in range(3):
        _call(client)
    assert state() == "open"
    for _ in range(4):
        _call(client)
    assert len(flaky.bodies) == 3  # skipped while open
    assert len(backup.bodies) == 7

    flaky.configure(status=None)  # it recovers
    time.sleep(1.1)
    assert state() == "half-open"
    _call(client)  # the one trial goes to the recovered worker, and closes the breaker
    assert state() == "closed"
    for _ in range(3):
        _call(client)
    assert (len(flaky.bodies), len(backup.bodies)) == (7, 7)


def test_a_worker_that_refuses_connections_is_failed_over(add_worker, servers, make_key,
                                                          client_for):
    working = servers()
    add_worker("refusing", _refused_url(), priority=10)
    add_worker("working", working.base_url, priority=0)
    client = client_for(make_key()[1])
    for _ in range(3):
        assert _call(client).choices[0].message.content
    assert len(working.bodies) == 3


def test_when_no_worker_is_enabled_or_healthy_the_answer_is_503(add_worker, servers, make_key,
                                                                 client_for):
    server = servers()
    worker = add_worker("only", server.base_url)
    Worker.objects.filter(pk=worker.pk).update(healthy=False)
    clear_all_caches()
    with pytest.raises(openai.APIStatusError) as refused:
        _call(client_for(make_key()[1]))
    assert refused.value.status_code == 503
    assert not LedgerEntry.objects.filter(kind="charge").exists()


def test_an_upstream_key_never_reaches_a_log_line(servers, add_worker, make_key, client_for,
                                                  caplog, router):
    import logging

    failing = servers(status=500)
    worker = add_worker("keyed", failing.base_url)
    worker.set_api_key("sk-upstream-very-secret")
    worker.save()
    clear_all_caches()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(openai.APIStatusError):
            _call(client_for(make_key()[1]))
        router.drain()
    assert failing.requests[-1].headers["Authorization"] == "Bearer sk-upstream-very-secret"
    assert caplog.records, "the failure was logged"
    assert "sk-upstream-very-secret" not in caplog.text
