"""Closing a loop's request-path connections waits for that loop's releases only: one left
behind by a loop that closed first (a test that failed midway, a process's other loop)
neither blocks it nor breaks it."""

from __future__ import annotations

import asyncio

from billing.services import hot_path


def test_a_release_left_by_a_closed_loop_does_not_stop_another_loop_from_closing():
    stranded = asyncio.new_event_loop()

    async def never_finishes() -> None:
        await asyncio.Event().wait()

    task = stranded.create_task(never_finishes())
    task._log_destroy_pending = False  # stranded on purpose: no warning when collected
    hot_path._releasing.add(task)
    stranded.run_until_complete(asyncio.sleep(0))  # started, then its loop goes
    stranded.close()
    try:
        asyncio.run(asyncio.wait_for(hot_path.close_pools(), timeout=5))
        assert task not in hot_path._releasing
    finally:
        hot_path._releasing.discard(task)
