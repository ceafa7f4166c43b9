"""Holds nobody settled, and wallets that disagree with their ledger.

A request settles its own hold; one whose process died before that (a crash, a kill, a
deploy that did not drain) leaves the hold pending, its money unavailable, unless its
resolution was waiting for the database (then the next router process writes it from the
dead one's spool: ``proxy.money.spool``). A settle writes
its usage record in the same transaction that resolves the hold, so a hold still pending
has no usage to charge: the sweeper expires every hold past ``expires_at`` and releases
its money. Holds are claimed with ``FOR UPDATE SKIP LOCKED``, so any number of sweepers may
run at once, and each hold is still resolved exactly once (the services only move a
pending hold). On PostgreSQL a thousand holds cost a handful of statements, not a
transaction each: a backlog of ten thousand (an instance that died under load) clears in
seconds.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from billing.models import Hold
from billing.selectors import WalletAudit, wallet_audits_failing
from billing.services.budgets import current_month
from billing.services.holds import hold_expire
from billing.services.sweep_statements import (
    EXPIRE_SQL,
    KEY_BUDGETS_RELEASE_SQL,
    MEMBER_BUDGETS_RELEASE_SQL,
    WALLETS_RELEASE_SQL,
)

logger = logging.getLogger(__name__)

BATCH = 1000


@dataclass
class SweepResult:
    expired: list[str] = field(default_factory=list)


def holds_sweep(*, now: datetime | None = None, batch: int = BATCH) -> SweepResult:
    """Expire every pending hold past its expiry; safe to run twice at once.

    On PostgreSQL a batch of holds is expired by a fixed number of statements in one
    transaction (``sweep_statements``); elsewhere hold by hold through ``hold_expire``.
    """
    now = now or timezone.now()
    expire = _expire_batch if connection.vendor == "postgresql" else _expire_one_by_one
    result = SweepResult()
    while True:
        claimed, expired = expire(now, batch)
        result.expired.extend(expired)
        # Fewer than a batch: nothing is left but what another sweeper holds right now.
        if claimed < batch:
            return result


def _expire_batch(now: datetime, batch: int) -> tuple[int, list[str]]:
    """Expire up to ``batch`` holds and release what they reserved, in one transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(EXPIRE_SQL, {"now": now, "batch": batch})
        rows = cursor.fetchall()
        by_wallet: dict[int, int] = defaultdict(int)
        by_key: dict[int, int] = defaultdict(int)
        for _, wallet_id, amount, api_key_id in rows:
            by_wallet[wallet_id] += amount
            if api_key_id is not None:
                by_key[api_key_id] += amount
        month = current_month()
        for sql, sums in ((WALLETS_RELEASE_SQL, by_wallet), (KEY_BUDGETS_RELEASE_SQL, by_key),
                          (MEMBER_BUDGETS_RELEASE_SQL, by_key)):
            if sums:
                cursor.execute(sql, {"ids": list(sums), "amounts": list(sums.values()),
                                     "month": month})
    return len(rows), [row[0] for row in rows]


def _expire_one_by_one(now: datetime, batch: int) -> tuple[int, list[str]]:
    claimed = _claim(now, batch)
    expired = [hold_id for hold_id in claimed
               if not hold_expire(hold_id=hold_id).already_resolved]
    return len(claimed), expired


def _claim(now: datetime, batch: int) -> list[str]:
    """The ids of pending, expired holds no other sweeper is working on right now.

    The row locks last only for this short transaction: they keep two sweepers from
    taking the same batch, while hold_expire re-checks each hold under its own lock.
    """
    with transaction.atomic():
        query = Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lt=now)
        if connection.features.has_select_for_update_skip_locked:
            query = query.select_for_update(skip_locked=True)
        return list(query.order_by("expires_at").values_list("pk", flat=True)[:batch])


def wallets_reconcile() -> list[WalletAudit]:
    """Every wallet whose posted balance is not the sum of its ledger, or whose pending
    balance is not the sum of its pending holds. Reported, never repaired: a mismatch is a
    bug or tampering, and a person must look at it."""
    mismatches = wallet_audits_failing()
    for audit in mismatches:
        logger.error("wallet %d does not reconcile: posted %d vs ledger %d, pending %d vs "
                     "pending holds %d", audit.wallet_id, audit.posted_micros,
                     audit.ledger_sum_micros, audit.pending_micros,
                     audit.pending_holds_micros)
    return mismatches
