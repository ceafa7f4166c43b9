"""The batcher on its own, without a database: what happens to an item whose caller goes
away. The batches' outcomes in PostgreSQL are in ``test_hot_path_batches``."""

from __future__ import annotations

import asyncio

import pytest

from billing.services.hot_path.batches import Batcher


def test_a_caller_cancelled_just_as_its_result_arrived_still_has_its_item_released():
    """The result is set, then the caller is cancelled before it runs again: it never sees
    the result, so the batcher hands the item to ``on_abandoned`` (for a reservation: the
    hold is released) instead of losing it."""
    abandoned: list[tuple[str, object]] = []

    async def scenario() -> None:
        caller: asyncio.Task[object] | None = None

        async def run(items: list[str]) -> list[bool]:
            # Queued before the result's callbacks: the caller is cancelled after its
            # result is set and before it wakes up to take it.
            asyncio.get_running_loop().call_soon(caller.cancel)
            return [True] * len(items)

        batcher: Batcher[str, bool] = Batcher(
            "test", run, key=lambda item: item, max_size=8,
            on_abandoned=lambda item, result: abandoned.append((item, result)))
        caller = asyncio.ensure_future(batcher.submit("hold-1"))
        with pytest.raises(asyncio.CancelledError):
            await caller

    asyncio.run(scenario())
    assert abandoned == [("hold-1", True)]
