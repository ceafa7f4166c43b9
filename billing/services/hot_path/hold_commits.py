"""The commits of this process's reservations still on their way to the disk.

A reservation's statement answers before its commit is done (``fetch_before_commit``):
the request learns that its hold is taken while PostgreSQL writes the commit to the disk,
and calls its upstream meanwhile. What must wait for the commit waits here, by hold id:

- the request's output (``durable``): nothing reaches the client before its hold is on
  the disk, so a crash of PostgreSQL cannot forget the hold of an answer already given;
  a commit that failed raises ``DatabaseUnavailable``, and the request answers 503;
- the resolution of the hold (``settled``: its settle, void or discard), which would not
  find a hold whose commit has not happened yet.

A commit is forgotten when it succeeds; one that failed is kept until the hold's
resolution asks for it (each request resolves its hold whichever way it ends).
"""

from __future__ import annotations

import asyncio

from billing.errors import DatabaseUnavailable

# As hold_times: past this many, the oldest entries (requests that never resolved their
# holds, which the sweeper resolves) are dropped.
LIMIT = 100_000

_pending: dict[str, asyncio.Future[None]] = {}


def taking(hold_id: str, commit: asyncio.Future[None]) -> None:
    """``commit`` is the one of ``hold_id``'s reservation."""
    if commit.done() and not commit.cancelled() and commit.exception() is None:
        return  # on the disk already
    if len(_pending) >= LIMIT:
        _pending.pop(next(iter(_pending)), None)
    _pending[hold_id] = commit
    commit.add_done_callback(lambda done: _forget_if_committed(hold_id, done))


def _forget_if_committed(hold_id: str, commit: asyncio.Future[None]) -> None:
    if commit.cancelled() or commit.exception() is not None:
        return  # kept: its request must learn that its hold was not taken
    if _pending.get(hold_id) is commit:
        del _pending[hold_id]


async def durable(hold_id: str) -> None:
    """Return once the hold's reservation is on the disk (at once if it is, or was not made
    by this process); raise DatabaseUnavailable if its commit failed (the hold may not
    exist). Nothing of a request's answer may reach its client before: PostgreSQL crashing
    meanwhile would forget a hold whose answer was given."""
    commit = _pending.get(hold_id)
    if commit is None:
        return
    try:
        # Shielded: a client going away stops waiting, not the commit.
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        if commit.cancelled():  # the loop is closing under it
            raise DatabaseUnavailable("the reservation's commit was cut off") from None
        raise


async def settled(hold_id: str) -> None:
    """Wait until the hold's reservation committed or failed to (nothing to wait for once
    it did), and forget it: its resolution comes next."""
    commit = _pending.pop(hold_id, None)
    if commit is not None:
        await asyncio.wait([commit])


def in_flight() -> int:
    """Commits still waited for, or failed and not yet asked about: whether the process is
    reserving while others are (a reservation then does not hold its wallet's row through
    its wait for the disk: ``statements.RESERVE_BUSY_SQL``)."""
    return len(_pending)
