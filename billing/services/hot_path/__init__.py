"""Reserve and settle for the request path: a statement for many requests at once, and no
thread hop.

The proxy calls these from its event loop for every request. On PostgreSQL, reservations
and settles that overlap in time go to the database together (``batches.Batcher``), each
group as one statement in autocommit mode on a pooled async psycopg connection: its own
short transaction, holding no lock across an ``await``. A request alone is sent at once.
When a group cannot decide a request (its wallet could not cover the group's sum, or the
group's statement failed), that request runs the one-request statement, which gives it its
own answer. Anywhere else (the embedded SQLite default) they run the ORM services in
``billing.services.holds`` in a worker thread.

``statements`` keeps the rules of those services, which stay the reference (the admin,
the CLI and the sweeper use them). ``tests/billing/test_hot_path.py`` runs the same
concurrency and state-machine checks against all three.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings

from billing.errors import DatabaseUnavailable, InsufficientFunds, KeySpendCapReached
from billing.models import KeyBudget, UsageRecord
from billing.selectors.budgets import SpendingRoom, spending_room_of
from billing.services.budgets import cap_shortfall, current_month
from billing.services.holds import (
    HoldOutcome,
    UsageReport,
    hold_create,
    hold_settle,
    hold_void,
)
from billing.services.holds import hold_discard as hold_discard_orm
from billing.services.holds import holds_extend as holds_extend_orm
from billing.services.hot_path import hold_commits, hold_times
from billing.services.hot_path.batches import ALONE, Alone, Batcher
from billing.services.hot_path.connections import (
    RETRY_DELAYS_S,
    RETRY_WINDOW_S,
    backoff,
    check_pool,
    close_pool,
    conninfo,
    execute,
    fetch,
    fetch_before_commit,
)
from billing.services.hot_path.connections import on_postgresql as _on_postgresql
from billing.services.hot_path.statements import (
    BUDGET_SQL,
    DISCARD_AT_SQL,
    DISCARD_SQL,
    EXTEND_SQL,
    MEMBER_BUDGET_SQL,
    RESERVE_BUSY_SQL,
    RESERVE_MANY_SQL,
    RESERVE_SQL,
    RESOLVE_AT_SQL,
    RESOLVE_MANY_AT_SQL,
    RESOLVE_MANY_SQL,
    RESOLVE_SQL,
    SPENDING_ROOM_SQL,
    WALLET_AVAILABLE_SQL,
)
from router_admin.settings_cache import setting

__all__ = ["RETRY_DELAYS_S", "RETRY_WINDOW_S", "backoff", "batchers", "check_pool",
           "close_pools", "conninfo", "hold_committed", "hold_discard", "hold_reserve",
           "hold_resolve", "holds_extend", "reservations_idle", "spending_room",
           "wallet_available"]

logger = logging.getLogger(__name__)

# Requests in one statement at most: past a few dozen the statement's own time grows
# faster than what it saves.
BATCH_MAX = 64


@dataclass(frozen=True)
class _Reservation:
    # The names of _reserve_alone's arguments, and of RESERVE_MANY_SQL's item columns.
    hold_id: str
    wallet_id: int
    amount_micros: int
    price_id: int
    model: str
    api_key_id: int | None
    expires_at: datetime
    # The hold's created_at, chosen once so that every try inserts the same primary key.
    created_at: datetime


@dataclass(frozen=True)
class _Resolution:
    hold_id: str
    cost_micros: int | None  # None: void
    usage: UsageReport
    created_at: datetime | None = None  # the hold's, when this process reserved it


async def _reserve_many(items: list[_Reservation]
                        ) -> list[bool | Alone | InsufficientFunds | KeySpendCapReached]:
    """True for each reservation taken; ALONE where its wallet could not cover the group."""
    if len(items) == 1:
        # One request: its own statement, cheaper than the group's, with its own refusal.
        try:
            await _reserve_alone(**vars(items[0]))
        except (InsufficientFunds, KeySpendCapReached, DatabaseUnavailable) as refusal:
            return [refusal]
        return [True]
    try:
        rows, commit = await fetch_before_commit(
            RESERVE_MANY_SQL, {"items": orjson.dumps(items).decode(), "month": current_month()},
            rows=True, then_durable=True)
    except DatabaseUnavailable as error:
        # Each alone would wait for the database again. The statement may have committed
        # before its connection died: its holds are released once the database is back.
        for item in items:
            _release(item.hold_id, item.created_at)
        return [DatabaseUnavailable(str(error)) for _ in items]
    taken = {row[0] for row in rows}
    for hold_id in taken:
        hold_commits.taking(hold_id, commit)
    return [True if item.hold_id in taken else ALONE for item in items]


async def _resolve_many(items: list[_Resolution]
                        ) -> list[int | DatabaseUnavailable | None]:
    try:
        if len(items) == 1:
            return [await _resolve_alone(items[0].hold_id, items[0].usage,
                                         items[0].cost_micros, items[0].created_at)]
        times = [item.created_at for item in items]
        known = all(time is not None for time in times)
        rows = await fetch(RESOLVE_MANY_AT_SQL if known else RESOLVE_MANY_SQL, {
            "created_min": min(times) if known else None,  # type: ignore[type-var]
            "created_max": max(times) if known else None,  # type: ignore[type-var]
            "items": orjson.dumps([
            {"ord": i, "hold_id": item.hold_id,
             "status": "voided" if item.cost_micros is None else "posted",
             "cost": item.cost_micros or 0, "worker": item.usage.worker,
             "prompt_tokens": item.usage.prompt_tokens,
             "completion_tokens": item.usage.completion_tokens,
             "cached_tokens": item.usage.cached_tokens,
             "cache_write_tokens": item.usage.cache_write_tokens,
             "endpoint": item.usage.endpoint, "source": item.usage.source,
             "estimate_reason": item.usage.estimate_reason, "over_cap": item.usage.over_cap,
             "usage_status": item.usage.status, "latency_ms": item.usage.latency_ms,
             "ttft_ms": item.usage.ttft_ms,
             "upstream_cost_micros": _upstream_cost(item.usage, item.cost_micros),
             "created_at": item.created_at}
            for i, item in enumerate(items)]).decode(), "month": current_month()}, rows=True)
    except DatabaseUnavailable as error:
        # Each alone would wait for the database again: each caller retries, later.
        return [DatabaseUnavailable(str(error)) for _ in items]
    charged = dict(rows)
    # A hold missing from the answer was no longer pending: someone else resolved it.
    return [charged.get(i) for i in range(len(items))]


# Releases of reservations whose callers went away while they were being made, or whose
# statement failed without saying whether it committed.
_releasing: set[asyncio.Future[None]] = set()
_batchers: dict[asyncio.AbstractEventLoop,
                tuple[Batcher[_Reservation, bool], Batcher[_Resolution, int | None]]] = {}


Batchers = tuple[Batcher[_Reservation, bool], Batcher[_Resolution, int | None],
                 Batcher[_Resolution, int | None]]


def batchers() -> Batchers:
    """This event loop's batchers: of reservations, of settles a request waits for, and of
    charges of answers already sent (``deferred``), which wait ROUTER_SETTLE_LINGER_MS for
    company: at concurrency 1 on one wallet that keeps them out of the next request's way
    (its reservation waits for the wallet row while a charge holds it)."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(loop)
    if found is None:
        found = _batchers[loop] = (
            Batcher("reservations", _reserve_many, key=lambda item: item.hold_id,
                    max_size=BATCH_MAX, on_abandoned=_release_abandoned),
            Batcher("settles", _resolve_many, key=lambda item: item.hold_id,
                    max_size=BATCH_MAX),
            Batcher("deferred charges", _resolve_many, key=lambda item: item.hold_id,
                    max_size=BATCH_MAX, linger_s=settings.ROUTER_SETTLE_LINGER_MS / 1000),
        )
    return found


def _batching() -> bool:
    return setting("ROUTER_DB_BATCHING")


def reservations_idle() -> bool:
    """Whether a reservation asked now goes to the database at once: no group of them is
    in the database (or waiting to go), or they are not grouped."""
    return not (_on_postgresql() and _batching()) or batchers()[0].idle


async def close_pools() -> None:
    """Let this loop's releases of abandoned holds finish, then close its connections.

    Only this loop's: a release begun in a loop that has since closed (a process's other
    loop, a test's) can neither be awaited here nor ever finish, and must not stop this
    one from closing."""
    loop = asyncio.get_running_loop()
    _releasing.difference_update([task for task in _releasing if task.get_loop().is_closed()])
    while mine := [task for task in _releasing if task.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)
    _batchers.pop(asyncio.get_running_loop(), None)
    await close_pool()


async def wallet_available(*, wallet_id: int) -> int:
    """A wallet's available balance in micro-USD (0 without one)."""
    if not _on_postgresql():
        from billing.selectors import wallet_available_of

        return await sync_to_async(wallet_available_of, thread_sensitive=False)(
            wallet_id=wallet_id)
    return (await _wallet_balances(wallet_id))[0]


async def spending_room(*, wallet_id: int, api_key_id: int | None) -> SpendingRoom:
    """What the wallet, the key's spend caps and its owner's budget in the key's
    organization leave, in one statement."""
    if not _on_postgresql():
        return await sync_to_async(spending_room_of, thread_sensitive=False)(
            wallet_id=wallet_id, api_key_id=api_key_id)
    row = await fetch(SPENDING_ROOM_SQL, {"wallet_id": wallet_id, "api_key_id": api_key_id,
                                          "month": current_month()})
    return SpendingRoom(*row) if row else SpendingRoom(0)


async def _wallet_balances(wallet_id: int) -> tuple[int, int]:
    """(available, held) in micro-USD; (0, 0) without a wallet."""
    row = await fetch(WALLET_AVAILABLE_SQL, {"wallet_id": wallet_id})
    return (row[0], row[1]) if row else (0, 0)


async def hold_reserve(
    *, wallet_id: int, hold_id: str, amount_micros: int, price_id: int, model: str,
    api_key_id: int | None, expires_at: datetime, committed: bool = True,
) -> None:
    """Reserve ``amount_micros`` for request ``hold_id``, or raise InsufficientFunds (or
    KeySpendCapReached).

    ``committed`` (the default): return once the hold is on the disk, as a transaction
    would. False: return as soon as the statement has granted it, its commit on its way
    (the request path calls its upstream meanwhile); ``hold_committed`` then waits for
    the commit, and must be awaited before anything is done for the client that counts
    on the hold (its answer). Until then no other transaction sees the hold.

    A caller cancelled (its client gone) while the reservation is being made leaves no
    hold behind: a batched reservation is dropped if it was not sent yet, and released
    when its result arrives if it was (``Batcher``'s ``on_abandoned``); a reservation made
    on its own finishes in a task of its own, and a hold it took is released at once.
    Cancelling a statement instead would not tell whether it had committed.

    A database that does not answer raises DatabaseUnavailable; as that statement may have
    committed, the hold is released once the database is back (``_release``).
    """
    reservation = _Reservation(hold_id, wallet_id, amount_micros, price_id, model, api_key_id,
                               expires_at, datetime.now(UTC))  # USE_TZ is on
    await _reserve(reservation)
    hold_times.remember(hold_id, reservation.created_at)
    if committed:
        try:
            await hold_commits.durable(hold_id)
        except BaseException:
            # Not taken, or its caller went away: either way nobody will use the hold (if
            # its commit happened after all, its connection lost on the way).
            _release(hold_id, reservation.created_at)
            raise


async def _reserve(reservation: _Reservation) -> None:
    if (_on_postgresql() and _batching()
            and await batchers()[0].submit(reservation) is not ALONE):
        return
    work = asyncio.ensure_future(_reserve_alone(**vars(reservation)) if _on_postgresql()
                                 else sync_to_async(_hold_create_orm, thread_sensitive=False)(
                                     **vars(reservation)))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        work.add_done_callback(lambda done: _release_if_taken(done, reservation.hold_id,
                                                              reservation.created_at))
        raise


# Awaited before any of a request's answer reaches its client (hold_commits.durable): called
# as it is, on every request, not through one more coroutine.
hold_committed = hold_commits.durable


def _release_abandoned(item: _Reservation, taken: bool | Alone) -> None:
    """A batched reservation whose caller went away while it was sent: release it now
    rather than when the sweeper finds it expired."""
    if taken is True:
        _release(item.hold_id, item.created_at)


def _release_if_taken(work: asyncio.Future[None], hold_id: str, created_at: datetime) -> None:
    if not work.cancelled() and work.exception() is None:
        _release(hold_id, created_at)


def _release(hold_id: str, created_at: datetime | None, *, discard: bool = False) -> None:
    if created_at is not None:
        hold_times.remember(hold_id, created_at)
    task = asyncio.ensure_future(_released(hold_id, discard=discard))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


async def hold_discard(*, hold_id: str) -> None:
    """Delete a hold its request never used and give its money back: the limits refused
    the request while its hold was being taken beside their check
    (``proxy.relay.admission``). Nothing is recorded, as for a request refused before its
    hold: no usage record, no charge. While the database is unavailable it is tried again
    in the background."""
    try:
        await _discard(hold_id)
    except DatabaseUnavailable:
        _release(hold_id, None, discard=True)  # its time is still remembered


async def _released(hold_id: str, *, discard: bool = False) -> None:
    """Void the hold if it exists and is pending (``discard``: delete it, with no usage
    record), trying again while the database is unavailable. Voiding a hold that was never
    taken changes nothing."""
    usage = UsageReport(prompt_tokens=0, completion_tokens=0,
                        source=UsageRecord.Source.ESTIMATED, status=UsageRecord.Status.CANCELLED,
                        estimate_reason=UsageRecord.EstimateReason.INCOMPLETE)
    pauses = backoff(RETRY_DELAYS_S, RETRY_WINDOW_S)
    while True:
        try:
            if discard:
                await _discard(hold_id)
            else:
                await hold_resolve(hold_id=hold_id, usage=usage, cost_micros=None)
            return
        except DatabaseUnavailable:
            pause = next(pauses, None)
            if pause is None:
                logger.error("request %s: its hold could not be released while the database "
                             "was unavailable; the sweeper will", hold_id)
                return
            await asyncio.sleep(pause)


async def _reserve_alone(
    *, wallet_id: int, hold_id: str, amount_micros: int, price_id: int, model: str,
    api_key_id: int | None, expires_at: datetime, created_at: datetime,
) -> None:
    # While other reservations commit, this one must not hold its wallet's row through its
    # wait for the disk (statements' docstring); in a quiet process it may.
    busy = hold_commits.in_flight() > 0
    try:
        row, commit = await fetch_before_commit(RESERVE_BUSY_SQL if busy else RESERVE_SQL, {
            "wallet_id": wallet_id, "hold_id": hold_id, "amount": amount_micros,
            "price_id": price_id, "model": model, "api_key_id": api_key_id,
            "expires_at": expires_at, "created_at": created_at, "month": current_month(),
        }, then_durable=busy)
    except psycopg.errors.CheckViolation as violation:
        constraint = violation.diag.constraint_name or ""
        if constraint.startswith("billing_keybudget"):
            raise await _cap_refusal(BUDGET_SQL, api_key_id, amount_micros, "") from None
        if constraint.startswith("billing_memberbudget"):
            raise await _cap_refusal(MEMBER_BUDGET_SQL, api_key_id, amount_micros,
                                     "member ") from None
        raise
    except psycopg.errors.UniqueViolation as violation:
        if not _is_hold_key(violation.diag.constraint_name or ""):
            raise
        return  # an earlier try committed before its connection died: this hold is ours
    except DatabaseUnavailable:
        # It may have committed before its connection died, and nobody will use the hold:
        # it is released once the database is back, not left for the sweeper.
        _release(hold_id, created_at)
        raise
    if not row or not row[0]:
        # Read the balance again, in a statement of its own: the refused statement's
        # snapshot may predate the reservations that made it fail, and the message must not
        # claim more money than there is.
        available, held = await _wallet_balances(wallet_id)
        raise InsufficientFunds(needed_micros=amount_micros, available_micros=available,
                                held_micros=held)
    hold_commits.taking(hold_id, commit)


def _is_hold_key(constraint: str) -> bool:
    """The holds' primary key: PostgreSQL names the partition's own (``billing_hold_p2027_01
    _pkey``, ``billing_hold_default_pkey``) where the table is partitioned by month."""
    return constraint.startswith("billing_hold_") and constraint.endswith("_pkey")


async def _cap_refusal(sql: str, api_key_id: int | None, amount_micros: int,
                       scope: str) -> KeySpendCapReached:
    """Which cap (the key's, or with ``scope`` "member ", its owner's budget in the
    organization) a refused reservation would have passed, read back on the same pool."""
    row = await fetch(sql, {"api_key_id": api_key_id})
    refusal = None
    if row is not None:
        budget = KeyBudget(lifetime_limit_micros=row[0], monthly_limit_micros=row[1],
                           spent_micros=row[2], pending_micros=row[3], month=row[4],
                           month_spent_micros=row[5])
        refusal = cap_shortfall(budget, amount_micros, scope=scope)
    # The cap had room again when read back: a concurrent request settled meanwhile, and
    # trying again may well succeed (``held_micros`` says room may come back).
    return refusal or KeySpendCapReached(needed_micros=amount_micros, remaining_micros=0,
                                         period=f"{scope}lifetime", held_micros=amount_micros)


def _hold_create_orm(*, wallet_id: int, hold_id: str, amount_micros: int, price_id: int,
                     model: str, api_key_id: int | None, expires_at: datetime,
                     created_at: datetime) -> None:
    # created_at is left to the model (auto_now_add): nothing partitions the ORM's tables
    # by it, and this path is the embedded SQLite default.
    from accounts.models import ApiKey
    from billing.models import ModelPrice, Wallet

    hold_create(wallet=Wallet(pk=wallet_id), hold_id=hold_id, amount_micros=amount_micros,
                price=ModelPrice.objects.get(pk=price_id), model=model,
                api_key=ApiKey.objects.get(pk=api_key_id) if api_key_id else None,
                expires_at=expires_at)


async def hold_resolve(*, hold_id: str, usage: UsageReport, cost_micros: int | None,
                       deferred: bool = False) -> int | None:
    """Settle the hold at ``cost_micros`` (capped at the hold), or void it when None.

    Returns what was charged, or None when the hold was no longer pending (someone else,
    e.g. the sweeper, resolved it first; nothing was changed). ``deferred``: nobody waits
    for this one (its answer was sent), so it may wait a moment to share a statement.
    """
    if not _on_postgresql():
        outcome = await sync_to_async(_resolve_orm, thread_sensitive=False)(
            hold_id, usage, cost_micros)
        return None if outcome.already_resolved else outcome.charged_micros
    await hold_commits.settled(hold_id)  # until it commits, the hold is nowhere to find
    created_at = hold_times.recall(hold_id)
    charged = ALONE
    if _batching():
        batcher = batchers()[2 if deferred else 1]
        charged = await batcher.submit(_Resolution(hold_id, cost_micros, usage, created_at))
    if charged is ALONE:
        charged = await _resolve_alone(hold_id, usage, cost_micros, created_at)
    # Forgotten only once the database answered: a caller trying again after
    # DatabaseUnavailable still names the partition.
    hold_times.forget(hold_id)
    return charged  # type: ignore[return-value]


async def _resolve_alone(hold_id: str, usage: UsageReport, cost_micros: int | None,
                         created_at: datetime | None) -> int | None:
    row = await fetch(RESOLVE_SQL if created_at is None else RESOLVE_AT_SQL, {
        "created_at": created_at,
        "hold_id": hold_id, "status": "voided" if cost_micros is None else "posted",
        "cost": cost_micros or 0, "worker": usage.worker,
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens, "endpoint": usage.endpoint,
        "source": usage.source,
        "estimate_reason": usage.estimate_reason, "over_cap": usage.over_cap,
        "usage_status": usage.status, "latency_ms": usage.latency_ms,
        "ttft_ms": usage.ttft_ms, "upstream_cost": _upstream_cost(usage, cost_micros),
        "month": current_month(),
    })
    return row[0] if row else None


async def _discard(hold_id: str) -> None:
    if not _on_postgresql():
        await sync_to_async(hold_discard_orm, thread_sensitive=False)(hold_id=hold_id)
        return
    await hold_commits.settled(hold_id)
    created_at = hold_times.recall(hold_id)
    await fetch(DISCARD_SQL if created_at is None else DISCARD_AT_SQL, {
        "hold_id": hold_id, "created_at": created_at, "month": current_month()})
    hold_times.forget(hold_id)


def _upstream_cost(usage: UsageReport, cost_micros: int | None) -> int | None:
    """A void charges nothing and records no upstream cost (unknown, not zero)."""
    return None if cost_micros is None else usage.upstream_cost_micros


async def holds_extend(*, hold_ids: list[str], expires_at: datetime) -> int:
    """``billing.services.holds.holds_extend`` for the event loop: one statement for every
    long-running request of this process."""
    if not _on_postgresql():
        return await sync_to_async(holds_extend_orm, thread_sensitive=False)(
            hold_ids=hold_ids, expires_at=expires_at)
    return await execute(EXTEND_SQL, {"hold_ids": hold_ids, "expires_at": expires_at,
                                      "created_since": hold_times.oldest(hold_ids)})


def _resolve_orm(hold_id: str, usage: UsageReport, cost_micros: int | None) -> HoldOutcome:
    if cost_micros is None:
        return hold_void(hold_id=hold_id, usage=usage)
    return hold_settle(hold_id=hold_id, usage=usage)
