"""Taking a request's hold, waiting for room when its own holds in flight may free some."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing.errors import InsufficientFunds, KeySpendCapReached
from billing.models import ModelPrice
from billing.services.hot_path import (
    hold_discard,
    hold_reserve,
    reservations_idle,
    spending_room,
)
from proxy.dialects.chat.request import ChatRequest
from proxy.money.plan import ChargePlan, Refused, plan_charge, plan_with_room, refusal
from proxy.money.room import RoomWait
from proxy.money.settlement import hold_keeper
from proxy.selectors import Caller
from router_admin.settings_cache import setting


async def plan_waiting(*, caller: Caller, chat: ChatRequest, price: ModelPrice,
                       wait: RoomWait) -> ChargePlan:
    """``plan_charge``, waiting for room while the limit that refuses has holds in flight."""
    while True:
        try:
            return await plan_charge(caller=caller, chat=chat, price=price)
        except Refused as refused:
            await wait.after(refused)


async def reserve(*, request_id: str, caller: Caller, chat: ChatRequest, price: ModelPrice,
                  plan: ChargePlan, wait: RoomWait | None = None) -> ChargePlan:
    """Take the hold of ``plan``; returns the plan the hold was taken for (a request without
    a cap that had to wait is planned again with what its limits leave then)."""
    while True:
        try:
            await _take(request_id, caller, chat, price, plan)
            return plan
        except InsufficientFunds as refused:
            wait = wait or RoomWait(caller.wallet_id)
            await wait.after(refusal("balance", refused.needed_micros,
                                     refused.available_micros, refused.held_micros,
                                     organization=caller.organization_id is not None))
        except KeySpendCapReached as capped:
            wait = wait or RoomWait(caller.wallet_id)
            await wait.after(refusal(capped.period, capped.needed_micros,
                                     capped.remaining_micros, capped.held_micros))
        if chat.max_tokens is None:
            plan = await _replanned(caller, chat, price, plan, wait)


async def reserve_once(*, request_id: str, caller: Caller, chat: ChatRequest,
                       price: ModelPrice, plan: ChargePlan) -> bool:
    """Take the hold of ``plan`` if the wallet and the caps have room for it now; False
    if they have not (``reserve`` then waits for room, or says why there is none)."""
    try:
        await _take(request_id, caller, chat, price, plan)
    except (InsufficientFunds, KeySpendCapReached):
        return False
    return True


def reserving_alone() -> bool:
    """Whether a hold asked now would go to the database at once, on its own (no group of
    reservations is there or waiting): the process is not busy reserving."""
    return reservations_idle()


async def discard_hold(request_id: str) -> None:
    """Give back the hold of a request refused before it used it (by the limits, asked
    beside the reservation): deleted, no usage record, as for one refused before its hold."""
    hold_keeper().discard(request_id)
    await hold_discard(hold_id=request_id)


async def _take(request_id: str, caller: Caller, chat: ChatRequest, price: ModelPrice,
                plan: ChargePlan) -> None:
    await hold_reserve(
        wallet_id=caller.wallet_id, hold_id=request_id, amount_micros=plan.amount_micros,
        price_id=price.pk, model=chat.model, api_key_id=caller.api_key_id,
        expires_at=datetime.now(UTC) + timedelta(seconds=setting("ROUTER_HOLD_TTL_SECONDS")),
        committed=False)  # the answer waits for the commit instead (hold_committed)
    hold_keeper().add(request_id)


async def _replanned(caller: Caller, chat: ChatRequest, price: ModelPrice, plan: ChargePlan,
                     wait: RoomWait) -> ChargePlan:
    while True:
        room = await spending_room(wallet_id=caller.wallet_id, api_key_id=caller.api_key_id)
        try:
            return plan_with_room(chat, price, plan.prompt_tokens, room,
                                  organization=caller.organization_id is not None)
        except Refused as refused:
            await wait.after(refused)
