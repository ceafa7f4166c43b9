"""Which worker takes a request: priority tiers, weights, capacity and circuit breakers.

The highest-priority tier that has a worker with a closed circuit and a free slot takes
the request; inside a tier the order is weighted-random. A request tries each worker at
most once and at most ``ROUTER_MAX_ATTEMPTS`` of them (failover happens only before any
output reached the client, see ``proxy.relay.completion``). When every candidate is at capacity it
waits up to ``ROUTER_CAPACITY_WAIT_MS`` for a slot.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from itertools import groupby

from django.conf import settings

from proxy.upstream.breaker import (
    ALLOWED_CLEAN,
    REFUSED,
    breaker_allows,
    breaker_failure,
    breaker_success,
)
from proxy.upstream.capacity import slot_acquire, slot_release
from proxy.upstream.providers.base import UpstreamTarget

POLL_SECONDS = 0.02


def weighted_order(targets: list[UpstreamTarget], rng: random.Random | None = None
                   ) -> list[UpstreamTarget]:
    """Tiers by priority, highest first; inside a tier, a weighted random permutation.

    Each worker gets the key u ** (1 / weight) for a uniform u, and the tier is sorted by
    key (Efraimidis and Spirakis): the first place goes to each worker in proportion to its
    weight, and so does every later place among the workers left.
    """
    rng = rng or random
    ordered: list[UpstreamTarget] = []
    by_priority = sorted(targets, key=lambda t: -t.priority)
    for _, tier in groupby(by_priority, key=lambda t: t.priority):
        ordered += sorted(tier, key=lambda t: rng.random() ** (1 / t.weight), reverse=True)
    return ordered


@dataclass
class Lease:
    """A worker chosen for one attempt, holding one of its slots until released."""

    target: UpstreamTarget
    request_id: str
    breaker_clean: bool = False  # no failures on record: a success has nothing to reset
    _released: bool = field(default=False, repr=False)

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await slot_release(self.target.worker_id, self.request_id)

    async def succeeded(self) -> None:
        if not self.breaker_clean:
            await breaker_success(self.target.worker_id)

    async def failed(self) -> None:
        await breaker_failure(self.target.worker_id)


class Candidates:
    """The workers one request may still try, in the order it tries them."""

    def __init__(self, targets: list[UpstreamTarget], request_id: str,
                 rng: random.Random | None = None) -> None:
        self.request_id = request_id
        self._order = weighted_order(targets, rng)
        self._done: set[int] = set()
        self.attempts = 0

    async def next(self) -> Lease | None:
        """The next worker to try, or None when none is left or none freed up in time."""
        if self.attempts >= settings.ROUTER_MAX_ATTEMPTS:
            return None
        deadline = time.monotonic() + settings.ROUTER_CAPACITY_WAIT_MS / 1000
        while True:
            full = False
            for target in self._order:
                if target.worker_id in self._done:
                    continue
                verdict = await breaker_allows(target.worker_id)
                if verdict == REFUSED:
                    self._done.add(target.worker_id)  # open circuit: skip it this request
                    continue
                if not await slot_acquire(target.worker_id, target.max_concurrency,
                                          self.request_id):
                    full = True
                    continue
                self._done.add(target.worker_id)
                self.attempts += 1
                return Lease(target, self.request_id, breaker_clean=verdict == ALLOWED_CLEAN)
            if not full or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_SECONDS)
