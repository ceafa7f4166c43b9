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

from proxy.ground.shared_state import SlotAsk
from proxy.upstream.breaker import (
    ALLOWED_CLEAN,
    REFUSED,
    breaker_allows,
    breaker_closed_in_memory,
    breaker_failure,
    breaker_success,
)
from proxy.upstream.capacity import slot_acquire, slot_ask, slot_hand_over, slot_release
from proxy.upstream.providers.base import UpstreamTarget
from router_admin.settings_cache import setting

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

    def hand_over(self) -> list[tuple[str, str]]:
        """Release the slot with the caller's own round trip to Redis: the (set, request
        id) pairs it must remove there (none when already released)."""
        if self._released:
            return []
        self._released = True
        return slot_hand_over(self.target.worker_id, self.request_id)

    async def succeeded(self) -> None:
        if not self.breaker_clean:
            await breaker_success(self.target.worker_id)
            self.breaker_clean = True  # told once: a second success has nothing to reset

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
        self._first: tuple[UpstreamTarget, int] | None = None  # (worker, breaker verdict)
        self._taken: Lease | None = None  # its slot, taken with the request's admission

    def first_slot(self) -> SlotAsk | None:
        """The slot of the worker this request would try first, for the admission to take
        in its own round trip; None when that worker's circuit is not known closed."""
        if not self._order:
            return None
        target = self._order[0]
        verdict = breaker_closed_in_memory(target.worker_id)
        if verdict is None:
            return None  # next() asks, in order
        self._first = (target, verdict)
        return slot_ask(target.worker_id, target.max_concurrency)

    def slot_taken(self, slot: list[tuple[str, str]]) -> None:
        """The admission took the first worker's slot: ``next`` starts with it, and the
        lease frees it."""
        if slot and self._first is not None:
            target, verdict = self._first
            self._taken = Lease(target, self.request_id,
                                breaker_clean=verdict == ALLOWED_CLEAN)

    async def release_unused(self) -> None:
        """Free the slot taken with the admission if no attempt used it (the request ended
        before its first attempt)."""
        if self._taken is not None:
            lease, self._taken = self._taken, None
            await lease.release()

    async def next(self) -> Lease | None:
        """The next worker to try, or None when none is left or none freed up in time."""
        if self.attempts >= setting("ROUTER_MAX_ATTEMPTS"):
            return None
        if self._taken is not None:
            lease, self._taken = self._taken, None
            self._done.add(lease.target.worker_id)
            self.attempts += 1
            return lease
        deadline = time.monotonic() + setting("ROUTER_CAPACITY_WAIT_MS") / 1000
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
