"""Keeping the holds of long-running requests from expiring, and catching any hold that
its request left behind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from billing.errors import DatabaseUnavailable
from billing.services.hot_path import holds_extend

logger = logging.getLogger("proxy.charging")

# How many times per ROUTER_HOLD_TTL_SECONDS the keeper extends the holds of running requests.
ROUNDS_PER_TTL = 6


class HoldKeeper:
    """Keeps the holds of this event loop's running requests from expiring.

    A hold expires ROUTER_HOLD_TTL_SECONDS after it was taken, so that a process that died
    does not keep money reserved for ever; but a stream may run longer than that, and the
    sweeper must not release the hold of a request that will still settle (its tokens would
    go unpaid). Every sixth of the TTL one statement moves the expiry of every hold that is
    older than that sixth to a whole TTL from then; a request costs a dict insert and a
    delete, and one timer serves them all. A hold's first extension comes at most two sixths
    after it was taken (the timer runs on its own phase), so the keeper may be late by two
    thirds of the TTL, a later one by five sixths, before the sweeper could take a live hold:
    at a third (the first way of doing it) a loaded machine stalling the loop for half a
    second expired a test's 1.5 s hold.

    Each hold has an owner, the task that will resolve it (the request's, then its
    settlement's). A hold whose owner ended without resolving it is a bug: it is not kept
    alive but handed to ``orphaned`` (which resolves it) at the next round, so no hold waits
    for the sweeper while its process lives.
    """

    def __init__(self, orphaned: Callable[[str], Awaitable[None]]) -> None:
        # hold id -> (when it was taken, in loop time; the task that will resolve it)
        self.running: dict[str, tuple[float, asyncio.Future[object] | None]] = {}
        self.task: asyncio.Task[None] | None = None
        self._orphaned = orphaned

    def add(self, hold_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.running[hold_id] = (loop.time(), asyncio.current_task())
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._extend_forever(), name="hold-keeper")

    def own(self, hold_id: str, task: asyncio.Future[object] | None) -> None:
        """``task`` resolves ``hold_id`` from now on (its settlement started)."""
        entry = self.running.get(hold_id)
        if entry is not None:
            self.running[hold_id] = (entry[0], task)

    def discard(self, hold_id: str) -> None:
        self.running.pop(hold_id, None)

    @property
    def ttl(self) -> float:
        return settings.ROUTER_HOLD_TTL_SECONDS

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    @property
    def round_seconds(self) -> float:
        return self.ttl / ROUNDS_PER_TTL

    async def _extend_forever(self) -> None:
        while self.running:
            await asyncio.sleep(self.round_seconds)
            await self.resolve_orphans()
            await self.extend_due(older_than=self.round_seconds)

    async def resolve_orphans(self) -> int:
        orphans = [hold_id for hold_id, (_, owner) in self.running.items()
                   if owner is not None and owner.done()]
        for hold_id in orphans:
            self.running.pop(hold_id, None)
            logger.error("request %s ended without resolving its hold; resolving it now",
                         hold_id)
            await self._orphaned(hold_id)
        return len(orphans)

    async def extend_due(self, *, older_than: float) -> int:
        cutoff = asyncio.get_running_loop().time() - older_than
        due = [hold_id for hold_id, (taken, _) in self.running.items() if taken <= cutoff]
        if not due:
            return 0
        try:
            return await holds_extend(
                hold_ids=due, expires_at=timezone.now() + timedelta(seconds=self.ttl))
        except (DatabaseError, psycopg.Error, DatabaseUnavailable):
            # The next round tries again; the hold still has two thirds of its TTL or more.
            logger.exception("could not extend the holds of %d running requests", len(due))
            return 0
