"""The proxy's side of reserve -> relay -> settle: how much to hold, and the calls into
billing's request-path services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from billing.errors import InsufficientFunds, KeySpendCapReached
from billing.models import ModelPrice
from billing.money import format_usd
from billing.services import UsageReport
from billing.services.hot_path import (
    hold_reserve,
    hold_resolve,
    holds_extend,
    wallet_available,
)
from proxy.errors import ApiError, bad_request, insufficient_quota
from proxy.selectors import Caller
from proxy.tokens import estimate_request_prompt_tokens
from proxy.validation import ChatRequest

logger = logging.getLogger(__name__)


# Settling must finish even when the client's disconnect cancels the request task: it runs
# as its own task, shielded, and this set keeps a reference until it is done.
_settling: set[asyncio.Future[Any]] = set()
T = TypeVar("T")
# How long a refused reservation waits for this process's settlements in flight, or, with
# none here, for another instance's (which may linger ROUTER_SETTLE_LINGER_MS first),
# before it is tried once more.
SETTLED_WAIT_S = 1.0
OTHERS_SETTLE_MARGIN_S = 0.03


@dataclass(frozen=True)
class ChargePlan:
    prompt_tokens: int  # a safe upper bound of what the upstream will count
    max_tokens: int  # the output cap sent upstream, per choice
    amount_micros: int  # the worst case, which is what the hold reserves


def _worst_case(price: ModelPrice, prompt_tokens: int, max_tokens: int, n: int) -> int:
    # A hold must reserve something: a free model still proves the caller has a wallet.
    return max(1, price.cost_micros(prompt_tokens=prompt_tokens,
                                    completion_tokens=max_tokens * n))


def _refusal(needed: int, available: int) -> ApiError:
    return insufficient_quota(
        f"You exceeded your current quota: this request needs up to ${format_usd(needed)} "
        f"but your available balance is ${format_usd(available)}. Add funds to continue."
    )


async def plan_charge(*, caller: Caller, chat: ChatRequest, price: ModelPrice) -> ChargePlan:
    prompt = estimate_request_prompt_tokens(chat.body)
    if chat.max_tokens is not None:
        if chat.max_tokens > price.max_output_tokens:
            param = ("max_completion_tokens" if "max_completion_tokens" in chat.body
                     else "max_tokens")
            raise bad_request(
                f"{param} is too large: {chat.max_tokens}. This model supports at most "
                f"{price.max_output_tokens} completion tokens.", param=param,
                code="invalid_value")
        return ChargePlan(prompt, chat.max_tokens,
                          _worst_case(price, prompt, chat.max_tokens, chat.n))

    # No cap from the client: the largest answer the balance affords, up to the model's
    # maximum. It is sent upstream, so the real cost can never pass the hold.
    available = await wallet_available(user_id=caller.user_id)
    max_tokens = price.max_output_tokens
    if price.output_usd_per_mtok > 0:
        input_cost = price.cost_micros(prompt_tokens=prompt, completion_tokens=0)
        affordable = int((available - input_cost) // (price.output_usd_per_mtok * chat.n))
        max_tokens = min(max_tokens, affordable)
        # The one rounding of the combined cost can add a micro-USD; step down past it.
        while max_tokens >= 1 and _worst_case(price, prompt, max_tokens, chat.n) > available:
            max_tokens -= 1
    if max_tokens < 1:
        raise _refusal(_worst_case(price, prompt, 1, chat.n), available)
    return ChargePlan(prompt, max_tokens, _worst_case(price, prompt, max_tokens, chat.n))


async def reserve(*, request_id: str, caller: Caller, chat: ChatRequest, price: ModelPrice,
                  plan: ChargePlan) -> None:
    async def take() -> None:
        await hold_reserve(
            user_id=caller.user_id, hold_id=request_id, amount_micros=plan.amount_micros,
            price_id=price.pk, model=chat.model, api_key_id=caller.api_key_id,
            expires_at=timezone.now() + timedelta(seconds=settings.ROUTER_HOLD_TTL_SECONDS),
        )

    try:
        try:
            await take()
        except (InsufficientFunds, KeySpendCapReached) as refused:
            if not refused.held_micros:
                raise
            # Requests in flight hold their worst case; an answer already sent (by this
            # process or another instance) holds it for the few milliseconds its charge
            # takes to be written, and may then leave room. A client calling one request
            # after another must not be refused for its own previous answer: wait for
            # those charges, then try once more.
            await settlements_written()
            await take()
    except InsufficientFunds as refused:
        raise _refusal(refused.needed_micros, refused.available_micros) from None
    except KeySpendCapReached as capped:
        raise insufficient_quota(str(capped)) from None
    hold_keeper().add(request_id)


class HoldKeeper:
    """Keeps the holds of this event loop's long-running requests from expiring.

    A hold expires ROUTER_HOLD_TTL_SECONDS after it was taken, so that a process that died
    does not keep money reserved for ever; but a stream may run longer than that, and the
    sweeper must not release the hold of a request that will still settle (its tokens would
    go unpaid). Every third of the TTL one statement moves the expiry of every hold that is
    older than that third; a request costs a dict insert and a delete, and one timer serves
    them all.
    """

    def __init__(self) -> None:
        self.running: dict[str, float] = {}  # hold id -> when it was taken (loop time)
        self.task: asyncio.Task[None] | None = None

    def add(self, hold_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.running[hold_id] = loop.time()
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._extend_forever(), name="hold-keeper")

    def discard(self, hold_id: str) -> None:
        self.running.pop(hold_id, None)

    @property
    def ttl(self) -> float:
        return settings.ROUTER_HOLD_TTL_SECONDS

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _extend_forever(self) -> None:
        while self.running:
            await asyncio.sleep(self.ttl / 3)
            await self.extend_due(older_than=self.ttl / 3)

    async def extend_due(self, *, older_than: float) -> int:
        cutoff = asyncio.get_running_loop().time() - older_than
        due = [hold_id for hold_id, taken in self.running.items() if taken <= cutoff]
        if not due:
            return 0
        try:
            return await holds_extend(
                hold_ids=due, expires_at=timezone.now() + timedelta(seconds=self.ttl))
        except (DatabaseError, psycopg.Error):
            # The next round tries again; the hold still has a third of its TTL or more.
            logger.exception("could not extend the holds of %d running requests", len(due))
            return 0


_keepers: dict[asyncio.AbstractEventLoop, HoldKeeper] = {}


def hold_keeper() -> HoldKeeper:
    """This event loop's keeper (the ASGI server runs one loop per process)."""
    loop = asyncio.get_running_loop()
    keeper = _keepers.get(loop)
    if keeper is None:
        keeper = _keepers[loop] = HoldKeeper()
    return keeper




def _tracked(work: Awaitable[T]) -> asyncio.Future[T]:
    """``work`` as a task that ``wait_for_settlements`` waits for."""
    task = asyncio.ensure_future(work)
    _settling.add(task)
    task.add_done_callback(_settling.discard)
    return task


async def shielded(work: Awaitable[T]) -> T:
    """Run ``work`` to the end even if the awaiting request is cancelled."""
    return await asyncio.shield(_tracked(work))


async def settlements_written() -> None:
    """Wait (briefly) for the settlements this process has in flight; with none, give those
    of other instances a moment."""
    if _settling:
        await asyncio.wait(list(_settling), timeout=SETTLED_WAIT_S)
    else:
        await asyncio.sleep(settings.ROUTER_SETTLE_LINGER_MS / 1000 + OTHERS_SETTLE_MARGIN_S)


def in_background(work: Awaitable[T]) -> asyncio.Future[T]:
    """Start ``work`` and let it finish whatever happens to the request that started it;
    ``wait_for_settlements`` (graceful shutdown, tests) waits for it like a settlement."""
    task = _tracked(work)
    # Nobody awaits it: its failure is logged here or nowhere.
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("work after an answer failed", exc_info=task.exception())


def charge_for(*, price: ModelPrice, plan: ChargePlan, usage: UsageReport) -> int:
    """What settling ``usage`` charges: its cost, never more than the hold (the statement
    caps it the same way)."""
    return min(plan.amount_micros, price.cost_micros(prompt_tokens=usage.prompt_tokens,
                                                     completion_tokens=usage.completion_tokens,
                                                     cached_tokens=usage.cached_tokens))


# Pauses between tries of a settlement that runs after its answer was sent, while the
# database is unreachable; after the last the sweeper releases the hold when it expires.
SETTLE_RETRY_DELAYS_S = (0.5, 2.0, 8.0)


async def settle_patiently(*, request_id: str, price: ModelPrice, plan: ChargePlan,
                           usage: UsageReport) -> int:
    """``settle``, tried again a few times if the database fails: the client has its answer,
    so there is nobody left to tell, and a lost settlement would leave it uncharged. A try
    that committed before its connection died leaves the hold resolved: the next one then
    changes nothing (and reports 0)."""
    for delay in SETTLE_RETRY_DELAYS_S:
        try:
            return await settle(request_id=request_id, price=price, plan=plan, usage=usage,
                                deferred=True)
        except (DatabaseError, psycopg.Error):
            logger.warning("request %s: writing its charge failed; trying again in %.1f s",
                           request_id, delay, exc_info=True)
            await asyncio.sleep(delay)
    return await settle(request_id=request_id, price=price, plan=plan, usage=usage,
                        deferred=True)


async def settle(*, request_id: str, price: ModelPrice, plan: ChargePlan,
                 usage: UsageReport, deferred: bool = False) -> int:
    """Charge what the request used; returns the micro-USD charged. ``deferred``: for an
    answer already sent (see ``hot_path.hold_resolve``)."""
    cost = price.cost_micros(prompt_tokens=usage.prompt_tokens,
                             completion_tokens=usage.completion_tokens,
                             cached_tokens=usage.cached_tokens)
    if cost > plan.amount_micros:
        # The hold is a worst case by construction, so this is a bug or an upstream that
        # ignored max_tokens. The user never pays past what was reserved.
        logger.error("request %s cost %d, over its hold of %d; charging the hold",
                     request_id, cost, plan.amount_micros)
    try:
        charged = await shielded(hold_resolve(hold_id=request_id, usage=usage,
                                              cost_micros=cost, deferred=deferred))
    finally:
        hold_keeper().discard(request_id)
    if charged is None:
        logger.warning("request %s was resolved by someone else before it settled", request_id)
        return 0
    return charged


async def void(*, request_id: str, usage: UsageReport) -> None:
    """Release the hold, charging nothing: the upstream produced nothing billable."""
    try:
        await shielded(hold_resolve(hold_id=request_id, usage=usage, cost_micros=None))
    finally:
        hold_keeper().discard(request_id)


async def wait_for_settlements() -> None:
    """Let every settlement in flight finish, then stop the hold keeper (tests; graceful
    shutdown: nothing is running by then)."""
    while _settling:
        await asyncio.gather(*list(_settling), return_exceptions=True)
    keeper = _keepers.pop(asyncio.get_running_loop(), None)
    if keeper is not None:
        keeper.stop()
