"""Work that must finish whatever happens to the request that started it: settlements and
the charges of answers already sent. ``wait_for_settlements`` (graceful shutdown, tests)
waits for all of it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

logger = logging.getLogger("proxy.charging")

T = TypeVar("T")

# Settling must finish even when the client's disconnect cancels the request task: it runs
# as its own task, shielded, and this set keeps a reference until it is done.
_settling: set[asyncio.Future[Any]] = set()


def tracked(work: Awaitable[T]) -> asyncio.Future[T]:
    """``work`` as a task that ``wait_for_settlements`` waits for."""
    task = asyncio.ensure_future(work)
    _settling.add(task)
    task.add_done_callback(_settling.discard)
    return task


async def shielded(work: Awaitable[T]) -> T:
    """Run ``work`` to the end even if the awaiting request is cancelled."""
    return await asyncio.shield(tracked(work))


def in_background(work: Awaitable[T]) -> asyncio.Future[T]:
    """Start ``work`` and let it finish whatever happens to the request that started it."""
    task = tracked(work)
    # Nobody awaits it: its failure is logged here or nowhere.
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("work after an answer failed", exc_info=task.exception())


async def settlements_in_flight() -> None:
    """Let every settlement in flight finish."""
    while _settling:
        await asyncio.gather(*list(_settling), return_exceptions=True)
