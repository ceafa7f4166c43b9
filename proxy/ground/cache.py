"""A small in-process cache with a time to live, for the lookups on the request path."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

from billing.errors import DatabaseUnavailable

K = TypeVar("K")
V = TypeVar("V")

_all_caches: list[TTLCache] = []


def _read_in_thread(load: Callable[[], V]) -> V:
    try:
        return load()
    except (OperationalError, InterfaceError) as error:
        # PostgreSQL cannot be reached (or dropped the connection): the request is answered
        # 503, to be tried again, not 500.
        raise DatabaseUnavailable(str(error)) from error
    finally:
        # Worker threads never see Django's request signals, so they recycle their own
        # connection when it broke or outlived CONN_MAX_AGE (no query is sent for this).
        connection.close_if_unusable_or_obsolete()


@dataclass
class _Entry(Generic[V]):
    expires: float
    value: V
    load: Callable[[], V]
    used: float  # when a request last read it


class TTLCache(Generic[K, V]):
    """Entries live ``ttl()`` seconds (read at each store, so settings overrides apply);
    the least recently stored go first past ``maxsize``.

    ``load`` is a synchronous database read, run in a worker thread on a miss. Concurrent
    misses of one key share one load: when an entry expires under load, every request in
    flight would otherwise query the database for the same row at the same moment.

    No request waits for a lookup that is in use: an entry read in its last
    ``REFRESH_AHEAD`` of its life is loaded again in the background while it still
    answers, and a keeper task reloads, before they expire, the entries read in the last
    ``KEEPALIVE_SECONDS`` (a key used every ten seconds never waits for the database). No
    entry is ever answered past its expiry, so a revoked key still stops within ``ttl()``.
    """

    REFRESH_AHEAD = 0.25
    KEEPALIVE_SECONDS = 300.0

    def __init__(self, *, ttl: Callable[[], float], maxsize: int = 10_000) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._keepers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        _all_caches.append(self)

    async def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit.expires > now:
            hit.used = now
            if hit.expires - now < self.ttl() * self.REFRESH_AHEAD:
                self._refresh(key, hit.load)
            return hit.value
        pending = self._loading.get(key)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            return await asyncio.shield(pending)
        value = await asyncio.shield(self._load(key, load))
        self._keep_alive()
        return value

    def _load(self, key: K, load: Callable[[], V]) -> asyncio.Future[V]:
        """One load of ``key`` in a worker thread, stored when it lands (shared by every
        request asking meanwhile)."""
        future = asyncio.ensure_future(
            sync_to_async(_read_in_thread, thread_sensitive=False)(load))
        self._loading[key] = future

        def stored(done: asyncio.Future[V]) -> None:
            if self._loading.get(key) is done:
                del self._loading[key]
            if done.cancelled() or done.exception() is not None:
                return
            now = time.monotonic()
            old = self._data.get(key)
            self._data[key] = _Entry(now + self.ttl(), done.result(), load,
                                     old.used if old else now)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

        future.add_done_callback(stored)
        return future

    def _refresh(self, key: K, load: Callable[[], V]) -> None:
        pending = self._loading.get(key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            # Nobody waits for it; a failure (the database away) leaves the entry to expire
            # and the next request to load it, and say so.
            self._load(key, load).add_done_callback(_quiet)

    def _keep_alive(self) -> None:
        if self.ttl() <= 0:
            return  # nothing is kept: nothing to keep fresh
        loop = asyncio.get_running_loop()
        keeper = self._keepers.get(loop)
        if keeper is None or keeper.done():
            self._keepers[loop] = loop.create_task(self._keep())

    async def _keep(self) -> None:
        """Reload the entries in use before they expire; stop once none has been read for
        KEEPALIVE_SECONDS (the next miss starts it again)."""
        while self.ttl() > 0:
            await asyncio.sleep(max(self.ttl() * self.REFRESH_AHEAD / 2, 0.05))
            now = time.monotonic()
            due = [(key, entry.load) for key, entry in list(self._data.items())
                   if now - entry.used < self.KEEPALIVE_SECONDS
                   and entry.expires - now < self.ttl() * self.REFRESH_AHEAD]
            for key, load in due:
                self._refresh(key, load)
            if not any(now - entry.used < self.KEEPALIVE_SECONDS
                       for entry in self._data.values()):
                return

    def clear(self) -> None:
        self._data.clear()

    def stop(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None] | None:
        """End this cache's keeper in ``loop`` (about to close); the task to wait for."""
        keeper = self._keepers.pop(loop, None)
        if keeper is not None:
            keeper.cancel()
        return keeper


def _quiet(done: asyncio.Future[object]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a background reload's failure is not an error here


def clear_all_caches() -> None:
    """Forget every cached lookup (tests, and after staff change workers or prices)."""
    for cache in _all_caches:
        cache.clear()


async def stop_cache_keepers() -> None:
    """End every cache's background reloads in this loop (the ASGI server's shutdown)."""
    loop = asyncio.get_running_loop()
    keepers = [keeper for cache in _all_caches if (keeper := cache.stop(loop)) is not None]
    await asyncio.gather(*keepers, return_exceptions=True)
