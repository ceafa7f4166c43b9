"""A refused reservation's wait for room (``proxy.money.RoomWait``), on its own: when it
waits, when it tries again at once, and when the 402 goes."""

from __future__ import annotations

import asyncio

import pytest

from proxy.ground.errors import ApiError
from proxy.money import RoomWait
from proxy.money.plan import refusal
from proxy.money.room import room_freed

WALLET = 7


def test_a_refusal_whose_balance_had_room_when_read_back_tries_again_at_once(settings):
    """The hold that stood in the way settled between the refused statement and the read
    of the balance for the message: that message would say there is enough. Seen when a
    stream's charge landed in that gap (in ``test_calls_one_after_another_...[streams]``
    with charges delayed)."""
    settings.ROUTER_RESERVE_WAIT_MS = 5000

    async def run() -> float:
        wait = RoomWait(WALLET)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wait.after(refusal("balance", needed=253, room=318, held=0))
        return loop.time() - started

    assert asyncio.run(run()) < 0.01


def test_a_refusal_with_no_room_and_nothing_in_flight_is_answered_at_once(settings):
    settings.ROUTER_RESERVE_WAIT_MS = 5000

    async def run() -> None:
        await RoomWait(WALLET).after(refusal("balance", needed=253, room=100, held=0))

    with pytest.raises(ApiError) as refused:
        asyncio.run(run())
    assert refused.value.status == 402
    assert "needs up to $0.000253" in refused.value.message


def test_a_refusal_with_holds_in_flight_waits_until_one_settles(settings):
    settings.ROUTER_RESERVE_WAIT_MS = 5000
    settings.ROUTER_SETTLE_LINGER_MS = 2000  # the poll would come much later than the wake

    async def run() -> float:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, room_freed, WALLET)
        started = loop.time()
        await RoomWait(WALLET).after(refusal("balance", needed=253, room=100, held=200))
        return loop.time() - started

    assert 0.09 < asyncio.run(run()) < 1


def test_room_read_back_does_not_outlast_the_wait(settings):
    """However often the room is taken by others before this request's next try, its
    patience ends at ``ROUTER_RESERVE_WAIT_MS`` after its first refusal."""
    settings.ROUTER_RESERVE_WAIT_MS = 50

    async def run() -> tuple[int, BaseException | None]:
        wait = RoomWait(WALLET)
        for tries in range(1, 100):
            try:
                await wait.after(refusal("balance", needed=253, room=318, held=0))
            except ApiError as error:
                return tries, error
            await asyncio.sleep(0.01)  # the next try, lost to another request
        return 100, None

    tries, error = asyncio.run(run())
    assert isinstance(error, ApiError)
    assert 2 <= tries <= 10
