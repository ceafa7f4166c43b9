"""Breakers and capacity are shared through Redis by every router instance, and fall back
to per-process state when Redis does not answer."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from proxy.ground import shared_state
from proxy.upstream.breaker import (
    ALLOWED_CLEAN,
    REFUSED,
    breaker_allows,
    breaker_failure,
    breaker_state,
    breaker_success,
)
from proxy.upstream.capacity import in_flight, slot_acquire, slot_release
from proxy.upstream.providers.base import UpstreamTarget
from proxy.upstream.routing import weighted_order


def _in_new_instance(coroutine_factory):
    """Run in a fresh event loop with a fresh Redis client, as another process would."""
    shared_state.reset_for_tests()
    return asyncio.run(coroutine_factory())


@pytest.fixture(autouse=True)
def _clean(settings):
    import redis

    settings.ROUTER_BREAKER_FAILURES = 2
    settings.ROUTER_BREAKER_COOLDOWN_SECONDS = 30
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    shared_state.reset_for_tests()
    yield
    shared_state.reset_for_tests()


def test_a_breaker_opened_by_one_instance_is_open_for_another():
    async def fail_twice():
        await breaker_failure(7)
        return await breaker_failure(7)

    assert _in_new_instance(fail_twice) is True
    assert _in_new_instance(lambda: breaker_allows(7)) == REFUSED
    assert _in_new_instance(lambda: breaker_state(7)) == "open"
    _in_new_instance(lambda: breaker_success(7))
    assert _in_new_instance(lambda: breaker_allows(7)) == ALLOWED_CLEAN


def test_only_one_trial_passes_a_half_open_breaker_across_instances(settings):
    settings.ROUTER_BREAKER_COOLDOWN_SECONDS = 1

    async def open_it():
        await breaker_failure(8)
        await breaker_failure(8)

    _in_new_instance(open_it)
    import time

    time.sleep(1.05)
    verdicts = [_in_new_instance(lambda: breaker_allows(8)) for _ in range(3)]
    assert sorted(verdicts) == [REFUSED, REFUSED, 1]
    assert _in_new_instance(lambda: breaker_failure(8)) is True  # the trial failed: reopen
    assert _in_new_instance(lambda: breaker_state(8)) == "open"


def test_capacity_is_counted_across_instances():
    assert _in_new_instance(lambda: slot_acquire(9, 2, "a"))
    assert _in_new_instance(lambda: slot_acquire(9, 2, "b"))
    assert not _in_new_instance(lambda: slot_acquire(9, 2, "c"))
    assert _in_new_instance(lambda: in_flight(9)) == 2
    _in_new_instance(lambda: slot_release(9, "a"))
    assert _in_new_instance(lambda: slot_acquire(9, 2, "c"))


def test_without_redis_each_process_keeps_its_own_state_and_requests_still_flow(settings,
                                                                               caplog):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"  # nothing answers there

    async def in_one_process():
        assert await slot_acquire(10, 1, "x")
        assert not await slot_acquire(10, 1, "y")
        await breaker_failure(10)
        await breaker_failure(10)
        return await breaker_allows(10)

    shared_state.reset_for_tests()
    assert asyncio.run(in_one_process()) == REFUSED
    assert "counted per process" in caplog.text


def test_weighted_order_puts_each_worker_first_in_proportion_to_its_weight():
    targets = [UpstreamTarget(worker_id=i, worker_name=f"w{i}", kind="openai", base_url="",
                              weight=w, priority=p)
               for i, (w, p) in enumerate([(1, 0), (3, 0), (5, 9)])]
    rng = random.Random(4)
    firsts = Counter()
    seconds = Counter()
    for _ in range(20_000):
        order = weighted_order(targets, rng)
        assert order[0].worker_id == 2  # the higher tier always comes first
        firsts[order[1].worker_id] += 1
        seconds[order[2].worker_id] += 1
    assert firsts[1] / 20_000 == pytest.approx(0.75, abs=0.015)
    assert seconds[0] / 20_000 == pytest.approx(0.75, abs=0.015)


def test_a_request_cancelled_during_a_redis_command_is_always_cancelled(settings):
    """Cancelled at many points of a loop of commands, every task must end (Python 3.11's
    wait_for, under redis-py's socket timeout, dropped a cancellation that arrived as a
    command's write completed; the router's own client waits on a plain future)."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis")

    async def scenario() -> int:
        client = shared_state.redis_client()
        assert client is not None

        async def busy() -> None:
            while True:
                await client.eval("return 0", 0)
                await asyncio.sleep(0.001)

        stopped = 0
        for i in range(150):
            task = asyncio.ensure_future(busy())
            await asyncio.sleep(0.0003 * (i % 9))
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1)
            stopped += bool(done) and task.cancelled()
            if not done:
                task.cancel()  # not to leave it running in the loop
        await shared_state.close_redis_clients()
        return stopped

    assert _in_new_instance(scenario) == 150
