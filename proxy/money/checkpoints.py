"""What a running stream has delivered, written to the spool as it goes, so that a process
that dies mid-stream still charges it.

A stream's charge is written when it ends. A process killed before that (out of memory, a
process manager's SIGKILL) took the charge with it, and the sweeper later released the hold
uncharged: output delivered and never paid for. (A machine that loses its power loses the
spool's last lines with it, which are not synced: the sweeper's case, as before.) So every
``ROUTER_STREAM_CHECKPOINT_MS`` each stream that delivered more since its last checkpoint
appends what it would be charged if it were cut there (its prompt and the output it
delivered, as a stream the client left is charged) to the process's spool file
(``spool``): one write for all of them. When the process dies, the next one replays the
file (each hold's last line) and charges the stream up to its last checkpoint: at most one
period of its output goes unpaid, instead of all of it.

A stream's checkpoints stop when its settlement starts, and its lines are forgotten once
that settlement is written (``ChargeSpool.landed``). The request path pays a dict entry per
stream; the checkpoints are built off it, by one timer per process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from billing.models import ModelPrice
from billing.services import UsageReport
from proxy.money.plan import ChargePlan
from proxy.money.settlement import charge_for
from proxy.money.spool import Resolution, charge_spool, spooling
from router_admin.settings_cache import setting

logger = logging.getLogger("proxy.charging")


class Checkpointed(Protocol):
    """A running stream, as its checkpoints see it."""

    @property
    def resolving(self) -> bool:
        """Its settlement has started: no checkpoint is needed any more."""

    def checkpoint(self) -> Resolution | None:
        """What it would be charged if cut now; None if nothing new since the last."""


class StreamCheckpoints:
    """The running streams of one event loop, and the timer that writes their checkpoints
    (started by the first stream, stopped when none is left)."""

    def __init__(self) -> None:
        self.running: dict[str, Checkpointed] = {}
        self.task: asyncio.Task[None] | None = None

    def watch(self, hold_id: str, stream: Checkpointed) -> None:
        if not setting("ROUTER_STREAM_CHECKPOINT_MS") or not spooling():
            return
        self.running[hold_id] = stream
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._forever(),
                                                               name="stream-checkpoints")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.running.clear()

    def write_due(self) -> int:
        """Append the checkpoint of every stream that delivered more since its last;
        forget those whose settlement started. Returns how many were written."""
        due: list[Resolution] = []
        for hold_id, stream in list(self.running.items()):
            if stream.resolving:
                del self.running[hold_id]
                continue
            try:
                resolution = stream.checkpoint()
            except Exception:
                # A bug here must cost the stream its checkpoint, not the timer.
                logger.exception("request %s: its checkpoint could not be built", hold_id)
                continue
            if resolution is not None:
                due.append(resolution)
        if due and charge_spool().add_many(due):
            return len(due)
        return 0

    async def _forever(self) -> None:
        while self.running:
            await asyncio.sleep(max(0.01, setting("ROUTER_STREAM_CHECKPOINT_MS") / 1000))
            self.write_due()


def checkpoint_of(hold_id: str, *, price: ModelPrice, plan: ChargePlan,
                  usage: UsageReport) -> Resolution:
    """The line that charges ``usage`` (at most the hold) if the stream's process dies."""
    return Resolution.of(hold_id, charge_for(price=price, plan=plan, usage=usage), usage)


_checkpoints: dict[asyncio.AbstractEventLoop, StreamCheckpoints] = {}


def stream_checkpoints() -> StreamCheckpoints:
    """This event loop's (the ASGI server runs one loop per process)."""
    loop = asyncio.get_running_loop()
    found = _checkpoints.get(loop)
    if found is None:
        found = _checkpoints[loop] = StreamCheckpoints()
    return found


def stop_checkpoints() -> None:
    found = _checkpoints.pop(asyncio.get_running_loop(), None)
    if found is not None:
        found.stop()
