"""Many requests' reservations (or settles) in one statement.

Under load, a router process has dozens of requests reserving and settling at once. Sent one
by one, each is a round trip, a commit and a new version of its wallet's row, and callers of
one wallet queue on that row's lock in PostgreSQL. A ``Batcher`` sends whatever arrived
while its previous statement was in the database as the next one: one round trip, one
commit and one update of each wallet for all of them. Nothing waits for a batch to fill:
a request that finds the batcher idle is sent at once, alone (the cost is one turn of the
event loop), so batches grow only as fast as requests actually overlap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Alone:
    """The result of an item whose batch could not decide it: the caller decides it with the
    one-request statement (which raises the precise error, or succeeds on its own)."""

    def __repr__(self) -> str:
        return "ALONE"


ALONE = Alone()


class Batcher(Generic[Item, Result]):
    """Runs ``run(items)`` -> one result per item, for items submitted by many callers.

    A result may be ``ALONE`` (the caller decides that item by itself) or an exception,
    which its caller raises.

    ``key``: items with the same key never share a batch (a second settle of one hold must
    see the first one's outcome). A caller cancelled before its item was sent gets nothing
    done: the item is dropped. ``on_abandoned(item, result)`` is called for an item whose
    caller went away after it was sent, whenever its result arrives (a reservation nobody
    will use). Settles are shielded from their callers, so theirs never go away.
    """

    def __init__(self, name: str, run: Callable[[list[Item]], Awaitable[list[Result]]], *,
                 key: Callable[[Item], Hashable], max_size: int, linger_s: float = 0.0,
                 on_abandoned: Callable[[Item, Result | Alone], None] | None = None) -> None:
        self.name = name
        # How long an idle batcher waits for company before it sends: for work nobody
        # waits on, fewer and fuller statements (and fewer of them in the way of others).
        self.linger_s = linger_s
        self._run = run
        self._key = key
        self._max_size = max_size
        self._on_abandoned = on_abandoned
        self._queue: deque[tuple[Item, asyncio.Future[Result | Alone]]] = deque()
        self._task: asyncio.Task[None] | None = None
        # Statements sent, the requests they carried, and how many of them failed.
        self.batches = self.items = self.failures = 0

    @property
    def idle(self) -> bool:
        """Nothing queued nor in the database: an item submitted now is sent at once."""
        return self._task is None

    async def submit(self, item: Item) -> Result | Alone:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result | Alone] = loop.create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._drain(), name=f"batcher-{self.name}")
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelled just as its result arrived: the result is set, but nobody will see it.
            if future.done() and not future.cancelled():
                self._abandoned(item, future)
            raise
        finally:
            # A refusal raised here holds this frame in its traceback, and the future holds
            # the refusal: a cycle for the garbage collector to find, one per refused
            # request, unless the frame lets go of the future.
            del future

    def _abandoned(self, item: Item, future: asyncio.Future[Result | Alone]) -> None:
        if self._on_abandoned is not None and future.exception() is None:
            self._on_abandoned(item, future.result())

    def _take(self) -> list[tuple[Item, asyncio.Future[Result | Alone]]]:
        batch: list[tuple[Item, asyncio.Future[Result | Alone]]] = []
        later: list[tuple[Item, asyncio.Future[Result | Alone]]] = []
        keys: set[Hashable] = set()
        while self._queue and len(batch) < self._max_size:
            entry = self._queue.popleft()
            if entry[1].done():
                continue  # its caller is gone and nothing was done for it yet
            key = self._key(entry[0])
            if key in keys:
                later.append(entry)
                continue
            keys.add(key)
            batch.append(entry)
        self._queue.extendleft(reversed(later))
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result | Alone]]] = []
        try:
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                items = [item for item, _ in batch]
                try:
                    results: list[Result | Alone] = list(await self._run(items))
                except Exception:
                    # Whatever failed the statement (a cap one request would pass, a lost
                    # connection twice): every request tries alone, and gets its own error.
                    logger.info("a batch of %d %s failed; each is tried alone", len(items),
                                self.name, exc_info=True)
                    results = [ALONE] * len(items)
                    self.failures += 1
                self.batches += 1
                self.items += len(items)
                for (item, future), result in zip(batch, results, strict=True):
                    if future.done():
                        # Its caller went away while the statement ran.
                        if self._on_abandoned is not None and not isinstance(
                                result, BaseException):
                            self._on_abandoned(item, result)
                    elif isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except BaseException:
            # Only the loop shutting down cancels this task: no caller may wait for ever.
            for _, future in [*batch, *self._queue]:
                future.cancel()
            self._queue.clear()
            raise
        finally:
            self._task = None
