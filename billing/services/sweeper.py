"""Holds nobody settled, and wallets that disagree with their ledger.

A request settles its own hold; one whose process died before that (a crash, a kill, a
deploy that did not drain) leaves the hold pending, its money unavailable. A settle writes
its usage record in the same transaction that resolves the hold, so a hold still pending
has no usage to charge: the sweeper expires every hold past ``expires_at`` and releases
its money. Holds are claimed with ``FOR UPDATE SKIP LOCKED``, so any number of sweepers may
run at once, and each hold is still resolved exactly once (the services only move a
pending hold).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from billing.models import Hold
from billing.selectors import WalletAudit, wallet_audits_failing
from billing.services.holds import hold_expire

logger = logging.getLogger(__name__)

BATCH = 200


@dataclass
class SweepResult:
    expired: list[str] = field(default_factory=list)


def holds_sweep(*, now: datetime | None = None, batch: int = BATCH) -> SweepResult:
    """Expire every pending hold past its expiry; safe to run twice at once."""
    now = now or timezone.now()
    result = SweepResult()
    while True:
        claimed = _claim(now, batch)
        if not claimed:
            return result
        for hold_id in claimed:
            outcome = hold_expire(hold_id=hold_id)
            if not outcome.already_resolved:
                result.expired.append(hold_id)
        if len(claimed) < batch:
            return result


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
