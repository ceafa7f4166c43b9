"""The money step of a request: plan (its one output cap and the hold that covers it),
reserve (take the hold, waiting for room when its own holds in flight may free some),
meter (count the output it delivers, cut at the cap), check (believe the upstream's usage
only when it is plausible) and settle (resolve the hold, whatever fails)."""

from __future__ import annotations

# Awaited with the request's id before any of its answer goes out: its hold is reserved
# before its commit is done (the upstream starts meanwhile); DatabaseUnavailable (a 503) if
# the commit never reached the disk.
from billing.services.hot_path import hold_committed
from proxy.money.background import in_background, settlements_in_flight, shielded
from proxy.money.checkpoints import checkpoint_of, stop_checkpoints, stream_checkpoints
from proxy.money.output_meter import OutputMeter
from proxy.money.plan import ChargePlan, Refused, capped_plan, plan_charge
from proxy.money.refusals import flush_refusals, note_refusal
from proxy.money.reservations import (
    discard_hold,
    plan_waiting,
    reserve,
    reserve_once,
    reserving_alone,
)
from proxy.money.room import RoomWait
from proxy.money.settlement import (
    SETTLE_RETRY_DELAYS_S,
    charge_for,
    giving_up_within,
    hold_keeper,
    settle,
    stop_keeper,
    void,
)
from proxy.money.spool import Resolution
from proxy.money.usage_check import Verdict, allowance, check_usage, tolerance


async def wait_for_settlements() -> None:
    """Let every settlement in flight finish, then stop the hold keeper (tests; graceful
    shutdown: nothing is running by then). A charge still waiting for the database tries
    for a minute more at most (``SHUTDOWN_RETRY_S``), not for its hold's whole life."""
    await flush_refusals()
    async with giving_up_within():
        await settlements_in_flight()
    stop_keeper()
    stop_checkpoints()


__all__ = [
    "SETTLE_RETRY_DELAYS_S",
    "ChargePlan",
    "OutputMeter",
    "Refused",
    "Resolution",
    "RoomWait",
    "Verdict",
    "allowance",
    "capped_plan",
    "charge_for",
    "check_usage",
    "checkpoint_of",
    "discard_hold",
    "flush_refusals",
    "hold_committed",
    "hold_keeper",
    "in_background",
    "note_refusal",
    "plan_charge",
    "plan_waiting",
    "reserve",
    "reserve_once",
    "reserving_alone",
    "settle",
    "shielded",
    "stream_checkpoints",
    "tolerance",
    "void",
    "wait_for_settlements",
]
