"""A request's admission by the limits and its hold: both, or the 402 or 429 that refuses it.

The limits count in Redis and the hold is taken in PostgreSQL: asked one after the other,
a request waits for both round trips before its upstream call (about 0.25 and 0.65 ms at
concurrency 1 on the development machine). So when the admission waits for Redis, the hold
is asked at the same time. The outcome is the same as asking the limits first:

- a request the limits refuse answers 429 (even if its wallet was short too), and leaves
  nothing behind: a hold taken beside the refusal is deleted and its money given back,
  with no usage record, as if never taken (``money.discard_hold``); the refusal is
  counted as one;
- a request whose wallet or caps are short asks again the way it always did, after its
  admission (``money.reserve`` waits for room or answers 402): only the first try of the
  hold is taken beside the admission, so a 429 never waits for room to come;
- a client gone meanwhile leaves no hold pending and no slot taken.

Only while no reservation is in the database (``money.reserving_alone``): a hold asked
then goes at once, where under load it would wait for the group in the database anyway
(``billing.services.hot_path.batches``); and overlapping under load changed how holds
group, for 4.9 % more instructions per request at concurrency 64 (``bench/instructions.py``)
with no time to gain.

A caller the limits refused lately asks them first again for ``REFUSED_MEMORY_S``: a client
hammering past its limit must not cost PostgreSQL a hold and its discard per refusal.
Each process keeps its own memory; a first refusal per caller and process costs one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from billing.models import ModelPrice
from proxy import money
from proxy.dialects.chat.request import ChatRequest
from proxy.ground.errors import ApiError
from proxy.limits import (
    Admission,
    limits_admit,
    limits_asks_redis,
    limits_error,
    limits_release,
)
from proxy.selectors import Caller
from proxy.upstream.routing import Candidates

logger = logging.getLogger(__name__)

# How long a caller refused by its limits asks them before its hold (a rate window).
REFUSED_MEMORY_S = 60.0
# Callers remembered at most; past this, those refused longer ago than the memory go (all
# of them, if they were refused within it).
REFUSED_KEPT = 10_000

# (key id, wallet id) -> when the limits last refused it (time.monotonic()).
_refused_at: dict[tuple[int | None, int], float] = {}


async def admit_and_hold(request_id: str, caller: Caller, chat: ChatRequest,
                         price: ModelPrice, candidates: Candidates
                         ) -> tuple[money.ChargePlan, Admission]:
    """The request's plan, its admission by the limits (with its first worker's slot, in
    the same round trip to Redis), and its hold; or the 402 or 429 that refuses it (with
    nothing held and no slot taken)."""
    # A request that names its cap needs no database to plan; one that does not asks
    # what its wallet and key leave, and may have to wait for room.
    plan = money.capped_plan(chat, price)
    wait = None
    if plan is None:
        wait = money.RoomWait(caller.wallet_id)
        plan = await money.plan_waiting(caller=caller, chat=chat, price=price, wait=wait)
    scopes = caller.limit_scopes()
    beside = (limits_asks_redis(scopes) and money.reserving_alone()
              and not _refused_lately(caller))
    # Beside the hold, the script is written as soon as the admission's task runs, a turn
    # after the reservation's statement went (``_StartedSoon``); written with the loop
    # turn's other writes instead, it often came back after the reservation's rows.
    admitting = limits_admit(scopes=scopes, request_id=request_id, tokens=plan.limit_tokens,
                             slot=candidates.first_slot(), at_once=beside)
    held = False
    if beside:
        admission, held = await _admitted_beside_hold(
            _StartedSoon(admitting), request_id, caller, chat, price, plan)
    else:
        admission = await admitting
    if not admission.allowed:
        _refused_at[_caller_key(caller)] = time.monotonic()
        if held:
            await money.shielded(money.discard_hold(request_id))
        raise limits_error(admission)
    if not held:
        plan = await _reserve_admitted(admission, request_id, caller, chat, price, plan, wait)
    candidates.slot_taken(admission.take_slot())
    return plan, admission


class _StartedSoon:
    """The admission's task, started on the loop's next turn: the reservation's statement,
    whose round trip to PostgreSQL is the longer one (0.55-0.65 ms against about 0.3 ms
    for the script, its own work included, at concurrency 1), goes out first and the
    script right after it, rather than the script first and the statement behind the
    script's own work (bench/HISTORY.md, the sixth session). ``task`` starts it now if the
    turn has not come yet."""

    __slots__ = ("_coro", "_dropped", "_task")

    def __init__(self, coro: Coroutine[Any, Any, Admission]) -> None:
        self._coro = coro
        self._task: asyncio.Future[Admission] | None = None
        self._dropped = False
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        if not self._dropped:
            self.task()

    def task(self) -> asyncio.Future[Admission]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._coro)
        return self._task

    def drop_unless_started(self) -> bool:
        """Never start it, if it has not started (nothing was asked of Redis); whether it
        had."""
        if self._task is not None:
            return True
        self._dropped = True
        self._coro.close()
        return False


async def _admitted_beside_hold(admitting: _StartedSoon, request_id: str,
                                caller: Caller, chat: ChatRequest, price: ModelPrice,
                                plan: money.ChargePlan) -> tuple[Admission, bool]:
    """The admission, and whether the hold of ``plan`` was taken while it was asked."""
    try:
        held = await money.reserve_once(request_id=request_id, caller=caller, chat=chat,
                                        price=price, plan=plan)
    except BaseException:
        # No hold was left (a reservation whose caller went away is released by the hot
        # path); the admission, if it started, may have taken slots.
        if admitting.drop_unless_started():
            await money.shielded(_release_when_admitted(admitting.task(), request_id))
        raise
    try:
        # Shielded: a client gone now must not cancel the admission half-way (its slots
        # would be taken in Redis with nobody to free them).
        return await asyncio.shield(admitting.task()), held
    except BaseException:
        await money.shielded(_undo(admitting.task(), request_id, held=held))
        raise


async def _reserve_admitted(admission: Admission, request_id: str, caller: Caller,
                            chat: ChatRequest, price: ModelPrice, plan: money.ChargePlan,
                            wait: money.RoomWait | None) -> money.ChargePlan:
    try:
        # A request that had to wait for room may be planned again: the token counters
        # are corrected to the actual count when it settles.
        return await money.reserve(request_id=request_id, caller=caller, chat=chat,
                                   price=price, plan=plan, wait=wait)
    except BaseException as error:
        await money.shielded(limits_release(admission))  # the worker's slot with it
        if isinstance(error, ApiError):
            error.headers.update(admission.headers)
        raise


async def _release_when_admitted(admitting: asyncio.Future[Admission], request_id: str
                                 ) -> None:
    try:
        admission = await admitting
    except Exception:
        # Nothing was counted (a Redis failure is answered with local counts, not raised):
        # a bug, which the request that raised it may not show if it failed otherwise.
        logger.exception("request %s: its admission failed", request_id)
        return
    if admission.allowed:
        await limits_release(admission)


async def _undo(admitting: asyncio.Future[Admission], request_id: str, *, held: bool
                ) -> None:
    """The request ends before it was admitted: free what its admission took, and give
    back its hold (``held``) as never used."""
    await _release_when_admitted(admitting, request_id)
    if held:
        await money.discard_hold(request_id)


def _caller_key(caller: Caller) -> tuple[int | None, int]:
    return caller.api_key_id, caller.wallet_id


def _refused_lately(caller: Caller) -> bool:
    if not _refused_at:
        return False
    now = time.monotonic()
    if len(_refused_at) > REFUSED_KEPT:
        for key, at in list(_refused_at.items()):
            if now - at > REFUSED_MEMORY_S:
                del _refused_at[key]
        if len(_refused_at) > REFUSED_KEPT:
            # Refusals for that many callers within a minute: forget them all rather than
            # walk them on every request (each costs at most one discarded hold again).
            _refused_at.clear()
    when = _refused_at.get(_caller_key(caller))
    return when is not None and now - when < REFUSED_MEMORY_S


def forget_refusals() -> None:
    """For tests: every caller asks beside its hold again."""
    _refused_at.clear()
