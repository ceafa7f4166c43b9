"""Reads of billing state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Sum
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


def wallet_audit(*, wallet: Wallet) -> WalletAudit:
    """Compare a wallet with the ledger and holds it is derived from."""
    ledger_sum = LedgerEntry.objects.filter(wallet=wallet).aggregate(s=Sum("amount_micros"))["s"]
    holds_sum = Hold.objects.filter(wallet=wallet, status=Hold.Status.PENDING).aggregate(
        s=Sum("amount_micros"))["s"]
    return WalletAudit(
        wallet_id=wallet.pk, posted_micros=wallet.posted_micros,
        ledger_sum_micros=ledger_sum or 0, pending_micros=wallet.pending_micros,
        pending_holds_micros=holds_sum or 0,
    )
