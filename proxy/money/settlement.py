"""Resolving a request's hold: settle (charge what it used) or void (charge nothing).

Settlement cannot fail open. It runs in its own task, so a client hanging up cannot stop it
halfway. A database that is unavailable is tried again until it is back, for as long as
the hold lives (``charge_retry_seconds``: a database away for longer than a minute, a
failover say, still gets the charges of the answers given meanwhile), in the background
when someone waits for the settlement (a stream's last chunk, an error answer): they are
not kept waiting for the database. A process shutting down tries for a minute more at
most (``giving_up_within``). Any
other error (a number the database refuses, a bug) falls back to charging the router's own
count of what the request used, and if even that fails, to releasing the hold: either way
the hold is resolved by its own request at once, the error is logged with the request id
and counted in ``router_settle_failures``. A resolution still waiting for the database is
kept on local disk from its first failed try (``spool``), so a process that stops or dies
meanwhile leaves it to the next one, as a running stream's checkpoints leave what it had
delivered (``checkpoints``). Only a process that dies before that first try, or before a
stream's first checkpoint (or a database away past the hold's life, once the sweeper has
released it), leaves a hold for the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from django.conf import settings

from billing.errors import UNREACHABLE
from billing.models import ModelPrice, UsageRecord
from billing.services import UsageReport
from billing.services.hot_path import (
    RETRY_DELAYS_S,
    RETRY_WINDOW_S,
    backoff,
    hold_resolve,
)
from proxy.ground.metrics import SETTLE_FAILURES
from proxy.money.background import in_background
from proxy.money.keeper import HoldKeeper
from proxy.money.plan import ChargePlan
from proxy.money.room import room_freed
from proxy.money.spool import Resolution, charge_spool

logger = logging.getLogger("proxy.charging")

# Pauses between tries of a settlement while the database is unavailable (the last one
# repeated), for charge_retry_seconds() in all; past that, the sweeper releases the hold.
SETTLE_RETRY_DELAYS_S = RETRY_DELAYS_S

# How long a process shutting down still tries the charges waiting for the database
# (``giving_up_within``).
SHUTDOWN_RETRY_S = RETRY_WINDOW_S
# Per event loop: when a process shutting down stops trying.
_give_up_at: dict[asyncio.AbstractEventLoop, float] = {}


def charge_retry_seconds() -> float:
    """How long a charge keeps trying while the database is unavailable: as long as its
    hold lives. Until 2026-12 it gave up after a minute, and the answers of a failover
    that took longer were never charged: the sweeper released their holds. Past the
    hold's life that is still what happens (the hold keeper cannot extend holds while the
    database is away), and trying longer would only find the hold released."""
    return max(RETRY_WINDOW_S, float(settings.ROUTER_HOLD_TTL_SECONDS))


@contextlib.asynccontextmanager
async def giving_up_within(seconds: float | None = None) -> AsyncIterator[None]:
    """While inside (a process shutting down), charges still waiting for the database give
    up ``seconds`` (``SHUTDOWN_RETRY_S``) from now at the latest: a process manager would
    kill a process that waited for the hold's whole life. Afterwards they get their whole
    time again."""
    loop = asyncio.get_running_loop()
    _give_up_at[loop] = loop.time() + (SHUTDOWN_RETRY_S if seconds is None else seconds)
    try:
        yield
    finally:
        _give_up_at.pop(loop, None)


def _past_giving_up(pause: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = _give_up_at.get(loop)
    return deadline is not None and loop.time() + pause > deadline


_keepers: dict[asyncio.AbstractEventLoop, HoldKeeper] = {}


def hold_keeper() -> HoldKeeper:
    """This event loop's keeper (the ASGI server runs one loop per process)."""
    loop = asyncio.get_running_loop()
    keeper = _keepers.get(loop)
    if keeper is None:
        keeper = _keepers[loop] = HoldKeeper(_release_orphan)
    return keeper


def stop_keeper() -> None:
    keeper = _keepers.pop(asyncio.get_running_loop(), None)
    if keeper is not None:
        keeper.stop()


def charge_for(*, price: ModelPrice, plan: ChargePlan, usage: UsageReport) -> int:
    """What settling ``usage`` charges: its cost, never more than the hold (the statement
    caps it the same way)."""
    return min(plan.amount_micros, _cost(price, usage))


def _cost(price: ModelPrice, usage: UsageReport) -> int:
    return price.cost_micros(prompt_tokens=usage.prompt_tokens,
                             completion_tokens=usage.completion_tokens,
                             cached_tokens=usage.cached_tokens,
                             cache_write_tokens=usage.cache_write_tokens)


async def settle(*, request_id: str, wallet_id: int, price: ModelPrice, usage: UsageReport,
                 fallback: Callable[[], UsageReport], deferred: bool = False) -> int:
    """Charge ``usage`` (at most the hold); returns what was charged. ``fallback``: the
    router's own count, charged if ``usage`` cannot be. ``deferred``: the answer was sent,
    nobody waits, so the statement may wait a moment to be shared (see
    ``hot_path.hold_resolve``).

    Run it in a task a client's hang-up cannot cancel (``shielded``, ``in_background``):
    that task resolves the hold from now on.
    """
    hold_keeper().own(request_id, asyncio.current_task())
    return await _resolve(request_id, wallet_id, price, usage, fallback, deferred=deferred)


async def void(*, request_id: str, wallet_id: int, usage: UsageReport) -> None:
    """Release the hold, charging nothing: the request produced nothing billable. Run it as
    ``settle``."""
    hold_keeper().own(request_id, asyncio.current_task())
    await _resolve(request_id, wallet_id, None, usage, lambda: usage, deferred=False)


async def _resolve(request_id: str, wallet_id: int, price: ModelPrice | None,
                   usage: UsageReport, fallback: Callable[[], UsageReport], *,
                   deferred: bool) -> int:
    # What to write, in order, until one is written; what to count and say when it fails.
    attempts = (
        (lambda: usage, price, "charge",
         "its charge could not be computed or written; charging the router's own count"),
        (fallback, price, "estimate",
         "the router's own count could not be charged either; releasing the hold"),
        (lambda: _released(usage), None, "void",
         "its hold could not be released; the sweeper will"),
    )
    try:
        for report, priced, failure, then in attempts:
            try:
                attempt = report()
                cost = None if priced is None else _cost(priced, attempt)
                return await _written(request_id, attempt, cost, deferred)
            except UNREACHABLE:
                if deferred:
                    return _charge_given_up(request_id)
                # Someone waits for this (a stream's last chunk, an error answer), and the
                # database may be away for a while: the tries go on where nobody waits, and
                # the caller is told the charge they will write (the statement caps it at
                # the hold, which the checked usage never passes).
                in_background(_resolve(request_id, wallet_id, price, usage, fallback,
                                       deferred=True))
                return cost or 0
            except Exception:
                SETTLE_FAILURES.labels(failure).inc()
                logger.exception("request %s: %s", request_id, then)
        return 0
    finally:
        hold_keeper().discard(request_id)
        room_freed(wallet_id)


def _released(usage: UsageReport) -> UsageReport:
    return UsageReport(prompt_tokens=0, completion_tokens=0,
                       source=UsageRecord.Source.ESTIMATED, status=usage.status,
                       estimate_reason=UsageRecord.EstimateReason.SETTLE_ERROR,
                       worker=usage.worker[:200], latency_ms=usage.latency_ms,
                       ttft_ms=usage.ttft_ms)


def _charge_given_up(request_id: str) -> int:
    SETTLE_FAILURES.labels("database").inc()
    spool = charge_spool()
    if spool.holds(request_id):
        logger.error("request %s: the database stayed unreachable; its resolution stays "
                     "in %s, for a later try or the next process", request_id, spool.path)
    else:
        logger.error("request %s: the database stayed unreachable; its hold is left for "
                     "the sweeper", request_id)
    return 0


async def _written(request_id: str, usage: UsageReport, cost: int | None,
                   deferred: bool) -> int:
    """Resolve the hold (void when ``cost`` is None). ``deferred`` (nobody waits): trying
    again while the database is unavailable, for up to ``charge_retry_seconds()`` (less
    when the process is shutting down); otherwise once. A try that committed before its
    connection died leaves the hold resolved: the next one then changes nothing (and this
    reports 0)."""
    pauses: Iterator[float] | None = None  # made at the first failure, not per request
    spooled = False
    while True:
        try:
            charged = await hold_resolve(hold_id=request_id, usage=usage, cost_micros=cost,
                                         deferred=deferred)
            break
        except UNREACHABLE as error:
            if not deferred:
                raise
            if pauses is None:
                # On local disk from the first failure, not the last: a process killed
                # while it tries (a deploy that did not wait, out of memory) leaves the
                # resolution to the next process (``spool``).
                spooled = charge_spool().add(
                    Resolution.of(request_id, cost, usage))
                pauses = backoff(SETTLE_RETRY_DELAYS_S, charge_retry_seconds())
            pause = next(pauses, None)
            if pause is None or _past_giving_up(pause):
                if spooled:
                    charge_spool().gave_up(request_id)
                raise
            # No traceback: while the database is away, this comes every few seconds for
            # every answer waiting for its charge.
            logger.warning("request %s: writing its charge failed (%s); trying again in "
                           "%.2f s", request_id, error, pause)
            await asyncio.sleep(pause)
    if spooled or charge_spool().holds(request_id):  # its line, or a stream's checkpoints
        charge_spool().landed(request_id)
    if charged is None:
        logger.warning("request %s was resolved by someone else before it settled",
                       request_id)
        return 0
    return charged


async def _release_orphan(hold_id: str) -> None:
    usage = UsageReport(prompt_tokens=0, completion_tokens=0,
                        source=UsageRecord.Source.ESTIMATED,
                        status=UsageRecord.Status.CANCELLED,
                        estimate_reason=UsageRecord.EstimateReason.SETTLE_ERROR)
    SETTLE_FAILURES.labels("orphan").inc()
    try:
        await _written(hold_id, usage, None, deferred=True)
    except Exception:
        logger.exception("request %s: its orphaned hold could not be released", hold_id)
