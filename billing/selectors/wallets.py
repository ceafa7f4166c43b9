"""Reads of wallets, prices and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from billing.models import Hold, LedgerEntry, ModelPrice, Wallet


@dataclass(frozen=True)
class Balance:
    posted_micros: int
    pending_micros: int

    @property
    def available_micros(self) -> int:
        return self.posted_micros - self.pending_micros


def wallet_balance(*, user: User) -> Balance:
    wallet = Wallet.objects.filter(user=user).first()
    if wallet is None:
        return Balance(posted_micros=0, pending_micros=0)
    return Balance(posted_micros=wallet.posted_micros, pending_micros=wallet.pending_micros)


def price_current(*, model: str, at: datetime | None = None) -> ModelPrice | None:
    return (
        ModelPrice.objects.filter(model=model, effective_from__lte=at or timezone.now())
        .order_by("-effective_from")
        .first()
    )


def prices_current(*, at: datetime | None = None) -> list[ModelPrice]:
    """The price in force for each model that has one."""
    latest: dict[str, ModelPrice] = {}
    for price in ModelPrice.objects.filter(effective_from__lte=at or timezone.now()).order_by(
        "model", "-effective_from"
    ):
        latest.setdefault(price.model, price)
    return list(latest.values())


@dataclass(frozen=True)
class WalletAudit:
    wallet_id: int
    posted_micros: int
    ledger_sum_micros: int
    pending_micros: int
    pending_holds_micros: int

    @property
    def consistent(self) -> bool:
        return (self.posted_micros == self.ledger_sum_micros
                and self.pending_micros == self.pending_holds_micros)


def wallets_with_sums() -> QuerySet[Wallet]:
    """Wallets annotated with ``ledger_sum`` (their entries) and ``holds_sum`` (their pending
    holds): what posted and pending must equal."""
    ledger_sum = (
        LedgerEntry.objects.filter(wallet=OuterRef("pk"))
        .values("wallet").annotate(s=Sum("amount_micros")).values("s")
    )
    holds_sum = (
        Hold.objects.filter(wallet=OuterRef("pk"), status=Hold.Status.PENDING)
        .values("wallet").annotate(s=Sum("amount_micros")).values("s")
    )
    return Wallet.objects.annotate(ledger_sum=Coalesce(Subquery(ledger_sum), Value(0)),
                                   holds_sum=Coalesce(Subquery(holds_sum), Value(0)))


def _audit(wallet: Wallet) -> WalletAudit:
    return WalletAudit(
        wallet_id=wallet.pk, posted_micros=wallet.posted_micros,
        ledger_sum_micros=wallet.ledger_sum, pending_micros=wallet.pending_micros,
        pending_holds_micros=wallet.holds_sum,
    )


def wallet_audit(*, wallet_id: int) -> WalletAudit:
    """Compare a wallet with the ledger and holds it is derived from, in one query so that
    all four numbers come from the same snapshot."""
    return _audit(wallets_with_sums().get(pk=wallet_id))


def wallet_audits_failing() -> list[WalletAudit]:
    """Every wallet that does not match its ledger or its pending holds."""
    return [audit for audit in map(_audit, wallets_with_sums().iterator())
            if not audit.consistent]


def wallet_balance_of(*, user_id: int) -> int:
    """The available balance in micro-USD of a user, by id, in one query."""
    row = Wallet.objects.filter(user_id=user_id).values_list("posted_micros",
                                                             "pending_micros").first()
    return row[0] - row[1] if row else 0


def wallet_available_of(*, wallet_id: int) -> int:
    """The available balance in micro-USD of a wallet, by id, in one query."""
    row = Wallet.objects.filter(pk=wallet_id).values_list("posted_micros",
                                                          "pending_micros").first()
    return row[0] - row[1] if row else 0


def ledger_entries_of(*, user: User, limit: int = 50) -> list[LedgerEntry]:
    """The user's latest ledger entries (credits and charges), newest first."""
    return list(LedgerEntry.objects.filter(wallet__user=user).order_by("-id")[:limit])
