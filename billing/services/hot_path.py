"""Reserve and settle for the request path: one statement, one round trip, no thread hop.

The proxy calls these from its event loop for every request. On PostgreSQL each is a single
statement on a pooled async psycopg connection in autocommit mode, so it is its own short
transaction and holds no lock across an ``await``. Anywhere else (the embedded SQLite
default) they run the ORM services in ``billing.services.holds`` in a worker thread.

The statements keep exactly the rules of those services, which stay the reference (the
admin, the CLI and the sweeper use them): a hold is taken only while
``posted - pending >= amount``; a settle only moves a hold that is still pending; the ledger
entry, the usage record, the hold and the wallet change together or not at all; the lock
order is the hold row, then the wallet row. ``tests/billing/test_hot_path.py`` runs the same
concurrency and state-machine checks against both.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from psycopg_pool import AsyncConnectionPool

from billing.errors import InsufficientFunds, KeySpendCapReached
from billing.models import KeyBudget
from billing.services.budgets import cap_shortfall, current_month
from billing.services.holds import (
    HoldOutcome,
    UsageReport,
    hold_create,
    hold_settle,
    hold_void,
)
from billing.services.holds import holds_extend as holds_extend_orm

RESERVE_SQL = """
WITH wallet AS (
    UPDATE billing_wallet
       SET pending_micros = pending_micros + %(amount)s, updated_at = now()
     WHERE user_id = %(user_id)s AND posted_micros - pending_micros >= %(amount)s
 RETURNING id
), hold AS (
    INSERT INTO billing_hold (id, wallet_id, api_key_id, price_id, model, amount_micros,
                              charged_micros, status, created_at, expires_at)
    SELECT %(hold_id)s, wallet.id, %(api_key_id)s, %(price_id)s, %(model)s, %(amount)s,
           0, 'pending', now(), %(expires_at)s
      FROM wallet
 RETURNING id
), budget AS (
    -- Only once the wallet had room; a cap it would pass breaks a CHECK on the budget
    -- row and fails the whole statement (see KeyBudget).
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros + %(amount)s,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM wallet
     WHERE b.api_key_id = %(api_key_id)s
)
SELECT count(*) FROM hold
"""

# The hold row is locked first (its UPDATE), then the wallet row: the same order as
# billing.services.holds, so the two paths cannot deadlock against each other.
RESOLVE_SQL = """
WITH hold AS (
    UPDATE billing_hold
       SET status = %(status)s, charged_micros = LEAST(%(cost)s, amount_micros),
           resolved_at = now()
     WHERE id = %(hold_id)s AND status = 'pending'
 RETURNING id, wallet_id, amount_micros, charged_micros, api_key_id, price_id, model
), wallet AS (
    UPDATE billing_wallet AS w
       SET pending_micros = w.pending_micros - hold.amount_micros,
           posted_micros = w.posted_micros - hold.charged_micros,
           updated_at = now()
      FROM hold
     WHERE w.id = hold.wallet_id
 RETURNING w.id, w.user_id, w.posted_micros
), entry AS (
    INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, balance_after_micros,
                                     idempotency_key, memo, hold_id, created_at)
    SELECT wallet.id, 'charge', -hold.charged_micros, wallet.posted_micros,
           'charge:' || hold.id, hold.model || ' request ' || hold.id, hold.id, now()
      FROM hold, wallet
     WHERE hold.charged_micros > 0
), budget AS (
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros - hold.amount_micros,
           spent_micros = b.spent_micros + hold.charged_micros,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END + hold.charged_micros,
           month = %(month)s
      FROM hold
     WHERE b.api_key_id = hold.api_key_id
), usage AS (
    INSERT INTO billing_usagerecord (request_id, user_id, api_key_id, model, worker,
                                     prompt_tokens, completion_tokens, cached_tokens,
                                     cost_micros, price_id, source, status, latency_ms,
                                     ttft_ms, created_at)
    SELECT hold.id, wallet.user_id, hold.api_key_id, hold.model, %(worker)s,
           %(prompt_tokens)s, %(completion_tokens)s, %(cached_tokens)s,
           hold.charged_micros, hold.price_id, %(source)s, %(usage_status)s, %(latency_ms)s,
           %(ttft_ms)s, now()
      FROM hold, wallet
)
SELECT charged_micros FROM hold
"""

EXTEND_SQL = """
UPDATE billing_hold SET expires_at = %(expires_at)s
 WHERE id = ANY(%(hold_ids)s) AND status = 'pending' AND expires_at < %(expires_at)s
"""

WALLET_AVAILABLE_SQL = """
SELECT posted_micros - pending_micros FROM billing_wallet WHERE user_id = %(user_id)s
"""

_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}


def _on_postgresql() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def conninfo() -> str:
    """libpq connection string of the default database, from Django's settings."""
    db = settings.DATABASES["default"]
    parts = {"dbname": db["NAME"], "user": db.get("USER"), "password": db.get("PASSWORD"),
             "host": db.get("HOST"), "port": db.get("PORT")}
    parts.update({k: v for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, str)})
    return " ".join(f"{k}='{_quote(str(v))}'" for k, v in parts.items() if v)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def _pool() -> AsyncConnectionPool:
    # One pool per event loop: an async pool belongs to the loop that opened it, and the
    # ASGI server runs one loop per process.
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = AsyncConnectionPool(
            conninfo(), min_size=1, max_size=settings.ROUTER_DB_POOL_SIZE, open=False,
            # Prepared from the first use: these few statements run on every request.
            kwargs={"autocommit": True, "prepare_threshold": 0}, name="billing-hot-path",
        )
        _pools[loop] = pool
        await pool.open()
    return pool


async def close_pools() -> None:
    loop = asyncio.get_running_loop()
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()


async def _fetchone(sql: str, params: dict[str, object]) -> tuple | None:
    pool = await _pool()
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()
    except psycopg.OperationalError:
        # A pooled connection that died (PostgreSQL restarted, an admin ended it): the pool
        # drops it, checks the idle ones (they likely died with it) and the statement runs
        # once more on a live connection. Every statement here
        # is safe to repeat: a repeated reserve hits its own hold's primary key (below),
        # and a repeated resolve finds its hold no longer pending.
        await pool.check()
        async with pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()


async def wallet_available(*, user_id: int) -> int:
    """A user's available balance in micro-USD (0 without a wallet)."""
    if not _on_postgresql():
        from billing.selectors import wallet_balance_of

        return await sync_to_async(wallet_balance_of, thread_sensitive=False)(user_id=user_id)
    row = await _fetchone(WALLET_AVAILABLE_SQL, {"user_id": user_id})
    return row[0] if row else 0


async def hold_reserve(
    *, user_id: int, hold_id: str, amount_micros: int, price_id: int, model: str,
    api_key_id: int | None, expires_at: datetime,
) -> None:
    """Reserve ``amount_micros`` for request ``hold_id``, or raise InsufficientFunds."""
    if not _on_postgresql():
        await sync_to_async(_hold_create_orm, thread_sensitive=False)(
            user_id, hold_id, amount_micros, price_id, model, api_key_id, expires_at)
        return
    try:
        row = await _fetchone(RESERVE_SQL, {
            "user_id": user_id, "hold_id": hold_id, "amount": amount_micros,
            "price_id": price_id, "model": model, "api_key_id": api_key_id,
            "expires_at": expires_at, "month": current_month(),
        })
    except psycopg.errors.CheckViolation as violation:
        if not (violation.diag.constraint_name or "").startswith("billing_keybudget"):
            raise
        raise await _cap_refusal(api_key_id, amount_micros) from None
    except psycopg.errors.UniqueViolation as violation:
        if violation.diag.constraint_name != "billing_hold_pkey":
            raise
        return  # the first try committed before its connection died: this hold is ours
    if not row or not row[0]:
        # Read the balance again, in a statement of its own: the refused statement's
        # snapshot may predate the reservations that made it fail, and the message must not
        # claim more money than there is.
        available = await wallet_available(user_id=user_id)
        raise InsufficientFunds(needed_micros=amount_micros, available_micros=available)


BUDGET_SQL = """
SELECT lifetime_limit_micros, monthly_limit_micros, spent_micros, pending_micros, month,
       month_spent_micros
  FROM billing_keybudget WHERE api_key_id = %(api_key_id)s
"""


async def _cap_refusal(api_key_id: int | None, amount_micros: int) -> KeySpendCapReached:
    """Which cap a refused reservation would have passed, read back on the same pool."""
    row = await _fetchone(BUDGET_SQL, {"api_key_id": api_key_id})
    refusal = None
    if row is not None:
        budget = KeyBudget(api_key_id=api_key_id, lifetime_limit_micros=row[0],
                           monthly_limit_micros=row[1], spent_micros=row[2],
                           pending_micros=row[3], month=row[4], month_spent_micros=row[5])
        refusal = cap_shortfall(budget, amount_micros)
    # The cap had room again when read back: a concurrent request settled meanwhile.
    return refusal or KeySpendCapReached(needed_micros=amount_micros, remaining_micros=0,
                                         period="lifetime")


def _hold_create_orm(user_id: int, hold_id: str, amount: int, price_id: int, model: str,
                     api_key_id: int | None, expires_at: datetime) -> None:
    from accounts.models import ApiKey, User
    from billing.models import ModelPrice

    hold_create(user=User(pk=user_id), hold_id=hold_id, amount_micros=amount,
                price=ModelPrice.objects.get(pk=price_id), model=model,
                api_key=ApiKey(pk=api_key_id) if api_key_id else None, expires_at=expires_at)


async def hold_resolve(*, hold_id: str, usage: UsageReport, cost_micros: int | None
                       ) -> int | None:
    """Settle the hold at ``cost_micros`` (capped at the hold), or void it when None.

    Returns what was charged, or None when the hold was no longer pending (someone else,
    e.g. the sweeper, resolved it first; nothing was changed).
    """
    if not _on_postgresql():
        outcome = await sync_to_async(_resolve_orm, thread_sensitive=False)(
            hold_id, usage, cost_micros)
        return None if outcome.already_resolved else outcome.charged_micros
    row = await _fetchone(RESOLVE_SQL, {
        "hold_id": hold_id, "status": "voided" if cost_micros is None else "posted",
        "cost": cost_micros or 0, "worker": usage.worker,
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens, "source": usage.source,
        "usage_status": usage.status, "latency_ms": usage.latency_ms,
        "ttft_ms": usage.ttft_ms, "month": current_month(),
    })
    return row[0] if row else None


async def holds_extend(*, hold_ids: list[str], expires_at: datetime) -> int:
    """``billing.services.holds.holds_extend`` for the event loop: one statement for every
    long-running request of this process."""
    if not _on_postgresql():
        return await sync_to_async(holds_extend_orm, thread_sensitive=False)(
            hold_ids=hold_ids, expires_at=expires_at)
    pool = await _pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(EXTEND_SQL, {"hold_ids": hold_ids,
                                                 "expires_at": expires_at})
        return cursor.rowcount


def _resolve_orm(hold_id: str, usage: UsageReport, cost_micros: int | None) -> HoldOutcome:
    if cost_micros is None:
        return hold_void(hold_id=hold_id, usage=usage)
    return hold_settle(hold_id=hold_id, usage=usage)
