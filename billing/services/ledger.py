"""The one place that moves a wallet's posted balance: an entry and the wallet, together."""

from __future__ import annotations

from billing.models import Hold, LedgerEntry, Wallet


def ledger_post(
    *,
    wallet: Wallet,
    kind: str,
    amount_micros: int,
    idempotency_key: str,
    memo: str = "",
    created_by_id: int | None = None,
    hold: Hold | None = None,
) -> LedgerEntry:
    """Append an entry and move ``wallet.posted_micros`` by the same amount.

    The caller holds the wallet's row lock inside its transaction (``select_for_update``):
    that is what makes ``balance_after_micros`` true, and what serialises concurrent
    posts to one wallet. The CHECK constraints on both tables refuse anything that would
    leave the available balance below zero.
    """
    wallet.posted_micros += amount_micros
    wallet.save(update_fields=["posted_micros", "pending_micros", "updated_at"])
    return LedgerEntry.objects.create(
        wallet=wallet,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=wallet.posted_micros,
        idempotency_key=idempotency_key,
        memo=memo[:500],
        created_by_id=created_by_id,
        hold=hold,
    )
