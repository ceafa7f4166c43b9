"""Waiting for room: a request refused while its wallet's (or key's) own holds are in
flight waits for them to settle before it is answered 402.

A request without a cap reserves what the balance affords; on a small balance, the first
of several concurrent requests takes all of it, and would make the others fail although
the balance covers every actual answer. So a refusal while holds are in flight is not
final: the request waits (at most ``ROUTER_RESERVE_WAIT_MS``) and tries again each time a
hold of the same wallet is resolved in this process, or every ``POLL_S`` for those of other
instances. A refusal with nothing in flight is answered at once.
"""

from __future__ import annotations

import asyncio

from django.conf import settings

from proxy.money.plan import Refused

# How often a waiting request looks again for holds resolved by another instance: their
# charges wait ROUTER_SETTLE_LINGER_MS for company first.
POLL_MARGIN_S = 0.03

_waiting: dict[asyncio.AbstractEventLoop, dict[int, set[asyncio.Future[None]]]] = {}


def room_freed(wallet_id: int) -> None:
    """A hold on ``wallet_id`` was resolved: wake the requests of that wallet (its user's,
    or its organization members') waiting for room."""
    waiters = _waiting.get(asyncio.get_running_loop(), {}).pop(wallet_id, None)
    for waiter in waiters or ():
        if not waiter.done():
            waiter.set_result(None)


def _poll_s() -> float:
    return settings.ROUTER_SETTLE_LINGER_MS / 1000 + POLL_MARGIN_S


class RoomWait:
    """One request's patience: ``ROUTER_RESERVE_WAIT_MS`` from its first refusal, shared by
    every refusal it meets after that."""

    def __init__(self, wallet_id: int) -> None:
        self.wallet_id = wallet_id
        self._deadline: float | None = None  # set at the first refusal: most never meet one

    async def after(self, refused: Refused) -> None:
        """Return when it may be worth trying again; raise the 402 when it is not."""
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + settings.ROUTER_RESERVE_WAIT_MS / 1000
        remaining = self._deadline - loop.time()
        if remaining <= 0:
            raise refused.error from None
        if refused.room_now:
            # The hold that stood in the way settled between the refusal and the balance
            # read back for its message (which would have said there was enough): try
            # again now. Each such try lost the room to a request that took it.
            return
        if refused.held_micros <= 0:
            raise refused.error from None
        waiter = loop.create_future()
        waiters = _waiting.setdefault(loop, {}).setdefault(self.wallet_id, set())
        waiters.add(waiter)
        try:
            # Not wait_for: on Python 3.11 it can drop the request's own cancellation.
            await asyncio.wait((waiter,), timeout=min(remaining, _poll_s()))
        finally:
            waiters.discard(waiter)
