"""A small in-process cache with a time to live, for the lookups on the request path."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError

from billing.errors import DatabaseUnavailable
from proxy.ground.orm_thread import recycled

K = TypeVar("K")
V = TypeVar("V")

_all_caches: list[TTLCache] = []


def _read_in_thread(load: Callable[[], V]) -> V:
    try:
        return recycled(load)
    except (OperationalError, InterfaceError) as error:
        # PostgreSQL cannot be reached (or dropped the connection): the request is answered
        # 503, to be tried again, not 500.
        raise DatabaseUnavailable(str(error)) from error


@dataclass
class _Entry(Generic[V]):
    expires: float
    value: V
    load: Callable[[], V]
    used: float  # when a request last read it
    arg: Any = None  # what ``reload_many`` needs to load it again (the cache key if None)


class TTLCache(Generic[K, V]):
    """Entries live ``ttl()`` seconds (read at each store, so settings overrides apply);
    the least recently stored go first past ``maxsize``.

    ``load`` is a synchronous database read, run in a worker thread on a miss. Concurrent
    misses of one key share one load: when an entry expires under load, every request in
    flight would otherwise query the database for the same row at the same moment.

    No request waits for a lookup that is in use: a keeper task reloads, in the last
    ``REFRESH_AHEAD`` of their life, the entries read in the last ``KEEPALIVE_SECONDS`` (a
    key used every ten seconds never waits for the database), and an entry read late in its
    life (``REFRESH_AHEAD``, or ``READ_REFRESH_AHEAD`` where the keeper batches) that the
    keeper has not reloaded yet is loaded again in the background while it still answers.
    No entry is ever answered past its expiry, so a revoked key still stops within
    ``ttl()``.

    ``reload_many``, if given, loads many entries at once (the ``arg`` each was stored
    with, in order; a value per arg): the keeper then reloads what is due in one
    statement per ``BATCH`` instead of one load each. Every key used in the last five
    minutes is reloaded about once per ``ttl()``: one by one, at about a millisecond of CPU
    each, 1,000 keys in use would cost a quarter of a core.
    """

    REFRESH_AHEAD = 0.25
    # With ``reload_many``, a read leaves an entry that is due to the keeper's next batch,
    # and reloads it on its own only this late in its life (the keeper passes every half
    # of REFRESH_AHEAD, so it is late by then). Under load every entry in use is read many
    # times a second: when reads reloaded whatever was due, each key was reloaded alone in
    # a worker thread of its own and the keeper never found a batch (64 keys in use at
    # 1,800 requests/s: 66 thread loads every 3.75 s, about 2 ms of CPU each, whose fight
    # for the interpreter's lock stopped the event loop for 30-60 ms each time).
    READ_REFRESH_AHEAD = REFRESH_AHEAD / 4
    KEEPALIVE_SECONDS = 300.0
    BATCH = 500

    def __init__(self, *, ttl: Callable[[], float], maxsize: int = 10_000,
                 reload_many: Callable[[Sequence[Any]], Sequence[V]] | None = None) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self.reload_many = reload_many
        self._data: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._keepers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        _all_caches.append(self)

    async def get_or_load(self, key: K, load: Callable[[], V], *, arg: Any = None) -> V:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit.expires > now:
            hit.used = now
            ahead = self.REFRESH_AHEAD if self.reload_many is None else self.READ_REFRESH_AHEAD
            if hit.expires - now < self.ttl() * ahead:
                self._refresh(key, hit.load, hit.arg)
            return hit.value
        pending = self._loading.get(key)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            return await asyncio.shield(pending)
        value = await asyncio.shield(self._load(key, load, arg))
        self._keep_alive()
        return value

    def _load(self, key: K, load: Callable[[], V], arg: Any) -> asyncio.Future[V]:
        """One load of ``key`` in a worker thread, stored when it lands (shared by every
        request asking meanwhile)."""
        future = asyncio.ensure_future(
            sync_to_async(_read_in_thread, thread_sensitive=False)(load))
        self._store_when_done(key, future, load, arg)
        return future

    def _store_when_done(self, key: K, future: asyncio.Future[V], load: Callable[[], V],
                         arg: Any) -> None:
        self._loading[key] = future

        def stored(done: asyncio.Future[V]) -> None:
            if self._loading.get(key) is done:
                del self._loading[key]
            if done.cancelled() or done.exception() is not None:
                return
            now = time.monotonic()
            old = self._data.get(key)
            self._data[key] = _Entry(now + self.ttl(), done.result(), load,
                                     old.used if old else now, arg)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

        future.add_done_callback(stored)

    def _idle(self, key: K) -> bool:
        pending = self._loading.get(key)
        return pending is None or pending.get_loop() is not asyncio.get_running_loop()

    def _refresh(self, key: K, load: Callable[[], V], arg: Any = None) -> None:
        if self._idle(key):
            # Nobody waits for it; a failure (the database away) leaves the entry to expire
            # and the next request to load it, and say so.
            self._load(key, load, arg).add_done_callback(_quiet)

    def _refresh_many(self, due: list[tuple[K, _Entry[V]]]) -> None:
        """Reload ``due`` through ``reload_many``, a batch at a time, each in one worker
        thread; every key gets its own future, so a request that misses meanwhile waits
        for the batch instead of loading the key again."""
        assert self.reload_many is not None
        reload_many = self.reload_many
        loop = asyncio.get_running_loop()
        due = [(key, entry) for key, entry in due if self._idle(key)]
        for start in range(0, len(due), self.BATCH):
            chunk = due[start:start + self.BATCH]
            futures: list[asyncio.Future[V]] = []
            for key, entry in chunk:
                future: asyncio.Future[V] = loop.create_future()
                self._store_when_done(key, future, entry.load, entry.arg)
                future.add_done_callback(_quiet)
                futures.append(future)
            args = [key if entry.arg is None else entry.arg for key, entry in chunk]
            batch = asyncio.ensure_future(sync_to_async(_read_in_thread, thread_sensitive=False)(
                lambda args=args: reload_many(args)))
            batch.add_done_callback(lambda done, futures=futures: _hand_out(done, futures))

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
            due = [(key, entry) for key, entry in list(self._data.items())
                   if now - entry.used < self.KEEPALIVE_SECONDS
                   and entry.expires - now < self.ttl() * self.REFRESH_AHEAD]
            # Through reload_many even when one entry is due: loaded alone (its own load), a key
            # that fell out of step with the others was reloaded alone in every life after.
            if self.reload_many is not None and due:
                self._refresh_many(due)
            else:
                for key, entry in due:
                    self._refresh(key, entry.load, entry.arg)
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


def _hand_out(batch: asyncio.Future[Sequence[V]], futures: list[asyncio.Future[V]]) -> None:
    """A batch reload landed: give each key's future its value (or the batch's failure)."""
    if batch.cancelled():
        for future in futures:
            future.cancel()
        return
    error = batch.exception()
    values = None if error is not None else batch.result()
    if values is not None and len(values) != len(futures):
        error = RuntimeError(f"reload_many returned {len(values)} values for "
                             f"{len(futures)} keys")
    for i, future in enumerate(futures):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(values[i])  # type: ignore[index]


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
