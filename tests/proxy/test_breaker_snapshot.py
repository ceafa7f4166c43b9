"""With Redis, a request does not ask Redis about a worker's circuit: each process reads it
once, keeps it in memory, refreshes it in the background, and updates it at once with its
own failures and successes."""

from __future__ import annotations

import asyncio

import pytest

from proxy.ground import shared_state
from proxy.upstream import breaker
from proxy.upstream.breaker import (
    ALLOWED,
    ALLOWED_CLEAN,
    REFUSED,
    breaker_allows,
    breaker_failure,
    breaker_success,
)


@pytest.fixture(autouse=True)
def _clean(settings):
    import redis

    settings.ROUTER_BREAKER_FAILURES = 2
    settings.ROUTER_BREAKER_COOLDOWN_SECONDS = 30
    settings.ROUTER_BREAKER_REFRESH_MS = 100
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    shared_state.reset_for_tests()
    breaker.reset_local_breakers()
    yield
    shared_state.reset_for_tests()
    breaker.reset_local_breakers()


@pytest.fixture
def redis_calls(monkeypatch) -> dict[str, int]:
    """How often breakers were read from Redis, and how often Redis was asked to decide."""
    calls = {"reads": 0, "decisions": 0}
    real_read, real_run = breaker._read, breaker._allow_script.run

    async def read(client, ids):
        calls["reads"] += 1
        return await real_read(client, ids)

    async def run(client, keys, args):
        calls["decisions"] += 1
        return await real_run(client, keys, args)

    monkeypatch.setattr(breaker, "_read", read)
    monkeypatch.setattr(breaker._allow_script, "run", run)
    return calls


def test_a_closed_circuit_is_answered_from_memory(redis_calls):
    async def hundred_requests() -> list[int]:
        return [await breaker_allows(3) for _ in range(100)]

    assert asyncio.run(hundred_requests()) == [ALLOWED_CLEAN] * 100
    assert redis_calls == {"reads": 1, "decisions": 0}  # read once, when first seen


def test_its_own_failures_open_it_at_once_and_a_success_closes_it(redis_calls):
    async def story() -> list[int]:
        seen = [await breaker_allows(4)]
        await breaker_failure(4)
        seen.append(await breaker_allows(4))  # one failure: allowed, not clean
        await breaker_failure(4)  # the second opens it
        seen.append(await breaker_allows(4))
        await breaker_success(4)
        seen.append(await breaker_allows(4))
        return seen

    assert asyncio.run(story()) == [ALLOWED_CLEAN, ALLOWED, REFUSED, ALLOWED_CLEAN]
    assert redis_calls["decisions"] == 0


def test_another_instances_open_circuit_is_seen_within_the_refresh_interval(redis_calls):
    async def open_elsewhere() -> None:
        await breaker_failure(5)
        await breaker_failure(5)

    async def here() -> list[int]:
        seen = [await breaker_allows(5)]
        await asyncio.to_thread(lambda: asyncio.run(open_elsewhere()))  # another process
        seen.append(await breaker_allows(5))  # not read yet: still closed here
        await asyncio.sleep(0.15)
        await breaker_allows(5)  # starts the background refresh, does not wait for it
        await asyncio.sleep(0.05)
        seen.append(await breaker_allows(5))
        return seen

    assert asyncio.run(here()) == [ALLOWED_CLEAN, ALLOWED_CLEAN, REFUSED]
