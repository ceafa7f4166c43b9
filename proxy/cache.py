"""A small in-process cache with a time to live, for the lookups on the request path."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_all_caches: list[TTLCache] = []


class TTLCache(Generic[K, V]):
    """Entries live ``ttl()`` seconds (read at each store, so settings overrides apply);
    the least recently stored go first past ``maxsize``.

    Two coroutines missing the same key at once may both load it: the loads are idempotent
    reads, and a lock here would put every request behind the slowest miss.
    """

    def __init__(self, *, ttl: Callable[[], float], maxsize: int = 10_000) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        _all_caches.append(self)

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        self._data[key] = (now + self.ttl(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()


def clear_all_caches() -> None:
    """Forget every cached lookup (tests, and after staff change workers or prices)."""
    for cache in _all_caches:
        cache.clear()
