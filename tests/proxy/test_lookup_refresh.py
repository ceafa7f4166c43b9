"""Cached lookups on the request path are loaded again before they expire, while they
still answer: a request never waits for a lookup that is in use, and never gets one past
its time to live (a revoked key still stops within it)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from proxy.ground.cache import TTLCache


class Loads:
    """A load that counts its calls and returns the value it is told to."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> str:
        with self.lock:
            self.calls += 1
        return self.value


@pytest.fixture
def cache(monkeypatch) -> TTLCache:
    monkeypatch.setattr(TTLCache, "KEEPALIVE_SECONDS", 5.0)
    return TTLCache(ttl=lambda: 0.4)


def test_an_entry_read_near_its_end_is_reloaded_in_the_background(cache):
    load = Loads("v1")

    async def story() -> list[object]:
        first = await cache.get_or_load("k", load)
        await asyncio.sleep(0.33)  # in its last quarter
        before = load.calls
        near_end = await cache.get_or_load("k", load)  # answered at once, reload started
        answered_without_waiting = load.calls == before
        await asyncio.sleep(0.2)  # past the first expiry: the reload extended it
        later = await cache.get_or_load("k", load)
        return [first, near_end, answered_without_waiting, later, load.calls]

    assert asyncio.run(story()) == ["v1", "v1", True, "v1", 2]


def test_an_entry_in_use_stays_loaded_through_an_idle_spell(cache):
    load = Loads("v1")

    async def story() -> tuple[int, int]:
        await cache.get_or_load("k", load)
        await asyncio.sleep(1.2)  # three times its life, with no request
        before = load.calls
        await cache.get_or_load("k", load)
        return before, load.calls

    before, after = asyncio.run(story())
    assert before >= 3  # the keeper reloaded it ahead of each expiry
    assert after == before  # the request after the idle spell did not wait for a load


def test_no_entry_answers_past_its_time_to_live(cache):
    load = Loads("active")

    async def story() -> list[str]:
        seen = [await cache.get_or_load("key", load)]
        load.value = "revoked"
        await asyncio.sleep(0.45)
        seen.append(await cache.get_or_load("key", load))
        return seen

    assert asyncio.run(story()) == ["active", "revoked"]


def test_a_zero_time_to_live_caches_nothing_and_keeps_nothing():
    load = Loads("v")
    cache: TTLCache = TTLCache(ttl=lambda: 0)

    async def story() -> int:
        for _ in range(3):
            await cache.get_or_load("k", load)
        await asyncio.sleep(0.2)
        return load.calls

    assert asyncio.run(story()) == 3
