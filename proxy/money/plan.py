"""How much a request may cost: its one output cap, and the hold that covers it.

One cap per request, used for the hold, the limits' token count and the one cap field sent
upstream: the smaller of the client's ``max_tokens`` and ``max_completion_tokens``, or,
when the client sent neither, the largest that the wallet, the key's lifetime cap and its
monthly cap all afford (and the model allows). The hold covers the prompt's upper bound and,
per choice, the cap plus the tolerance the output meter allows for tokenizer differences:
whatever the router lets through, the hold has paid for.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.errors import cap_message
from billing.models import ModelPrice
from billing.money import format_usd
from billing.selectors import SpendingRoom
from billing.services.hot_path import spending_room
from proxy.dialects.chat.request import ChatRequest
from proxy.ground.errors import ApiError, bad_request, insufficient_quota
from proxy.ground.tokens import estimate_request_prompt_tokens
from proxy.money.usage_check import allowance
from proxy.selectors import Caller


@dataclass(frozen=True)
class ChargePlan:
    prompt_tokens: int  # a safe upper bound of what the upstream will count
    max_tokens: int  # the output cap sent upstream, per choice
    amount_micros: int  # the worst case, which is what the hold reserves
    n: int = 1  # choices

    @property
    def allowance(self) -> int:
        """The output tokens each choice may deliver (what the hold covers)."""
        return allowance(self.max_tokens)

    @property
    def limit_tokens(self) -> int:
        """The tokens the rate limits count for this request before it is answered."""
        return self.prompt_tokens + self.max_tokens * self.n


class Refused(Exception):
    """A request its money cannot cover now: ``error`` is the 402 to answer, and
    ``held_micros`` what requests in flight hold against the limit that refused it (once
    they settle, there may be room). ``room_now``: the limit, read back after the refusal,
    had room for it by then (a hold in flight settled in between)."""

    def __init__(self, error: ApiError, held_micros: int, *, room_now: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.held_micros = held_micros
        self.room_now = room_now


def worst_case(price: ModelPrice, prompt_tokens: int, cap: int, n: int,
               cache_writes: bool = False) -> int:
    """The hold for a prompt bound and an output cap; ``cache_writes``: the whole prompt
    may be written to the upstream's cache, at the cache-write price if that is higher."""
    written = (prompt_tokens if cache_writes and price.cache_write_price > price.input_usd_per_mtok
               else 0)
    # A hold must reserve something: a free model still proves the caller has a wallet.
    return max(1, price.cost_micros(prompt_tokens=prompt_tokens,
                                    completion_tokens=allowance(cap) * n if n else 0,
                                    cache_write_tokens=written))


def refusal(limit: str, needed: int, room: int, held: int, *,
            organization: bool = False) -> Refused:
    """The 402 for a request needing ``needed`` where ``limit`` leaves ``room``: the
    wallet's balance ("balance": the organization's, for an organization's key), the key's
    cap ("lifetime", "monthly") or its owner's budget ("member lifetime", "member
    monthly")."""
    if limit == "balance":
        whose = "the organization's" if organization else "your"
        message = (f"You exceeded your current quota: this request needs up to "
                   f"${format_usd(needed)} but {whose} available balance is "
                   f"${format_usd(max(0, room))}. Add funds to continue.")
    else:
        message = cap_message(limit, needed, room)
    error = insufficient_quota(message)
    error.reason = limit
    return Refused(error, held, room_now=room >= needed)


def client_cap(chat: ChatRequest, price: ModelPrice) -> int | None:
    """The client's cap: each of its cap fields at most the model's maximum (a 400 naming
    the field otherwise), the smaller one counting."""
    for name, value in (chat.cap_fields or {}).items():
        if value > price.max_output_tokens:
            raise bad_request(
                f"{name} is too large: {value}. This model supports at most "
                f"{price.max_output_tokens} completion tokens.", param=name,
                code="invalid_value")
    return chat.max_tokens


def affordable_cap(price: ModelPrice, prompt: int, n: int, room: int,
                   cache_writes: bool = False) -> int:
    """The largest cap (up to the model's maximum) whose hold fits in ``room``; 0 if
    none. The hold grows with the cap, so the answer is found by bisection; with money
    for the model's maximum (the usual case) that is the first thing tried."""
    top = price.max_output_tokens
    if worst_case(price, prompt, top, n, cache_writes) <= room:
        return top
    if worst_case(price, prompt, 1, n, cache_writes) > room:
        return 0
    fits, too_big = 1, top
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        if worst_case(price, prompt, middle, n, cache_writes) <= room:
            fits = middle
        else:
            too_big = middle
    return fits


def plan_with_room(chat: ChatRequest, price: ModelPrice, prompt: int,
                   room: SpendingRoom, *, organization: bool = False) -> ChargePlan:
    """The plan of a request without a client cap, given what its limits leave (all of
    them: the cap shrinks to what the tightest affords)."""
    limit, left, held = room.tightest()
    writes = chat.may_write_cache
    if chat.n == 0:  # nothing to generate (embeddings): the hold is the prompt's
        needed = worst_case(price, prompt, 0, 0, writes)
        if needed > left:
            raise refusal(limit, needed, left, held, organization=organization)
        return ChargePlan(prompt, 0, needed, 0)
    cap = affordable_cap(price, prompt, chat.n, left, writes)
    if cap < 1:
        raise refusal(limit, worst_case(price, prompt, 1, chat.n, writes), left, held,
                      organization=organization)
    return ChargePlan(prompt, cap, worst_case(price, prompt, cap, chat.n, writes), chat.n)


def capped_plan(chat: ChatRequest, price: ModelPrice) -> ChargePlan | None:
    """The plan of a request that names its own cap (no database needed), or None."""
    cap = 0 if chat.n == 0 else client_cap(chat, price)
    if cap is None:
        return None
    prompt = prompt_bound(chat)
    return ChargePlan(prompt, cap, worst_case(price, prompt, cap, chat.n, chat.may_write_cache),
                      chat.n)


def prompt_bound(chat: ChatRequest) -> int:
    """A safe upper bound of the prompt the upstream will count (exact where known)."""
    if chat.prompt_tokens is not None:
        return chat.prompt_tokens
    return estimate_request_prompt_tokens(chat.body)


async def plan_charge(*, caller: Caller, chat: ChatRequest, price: ModelPrice) -> ChargePlan:
    """The request's cap and hold; raises ``Refused`` when no cap of at least one token
    fits (only without a client cap: a client's cap is refused, if at all, when the hold is
    taken)."""
    plan = capped_plan(chat, price)
    if plan is not None:
        return plan
    room = await spending_room(wallet_id=caller.wallet_id, api_key_id=caller.api_key_id)
    return plan_with_room(chat, price, prompt_bound(chat), room,
                          organization=caller.organization_id is not None)
