"""Reads of wallets, prices and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
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
    holds): what posted and pending must equal. One subquery per wallet, each through the
    wallet's index: for a few wallets; every wallet at once is ``wallet_audits_failing``."""
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


# One pass over each table: the ledger summed per wallet by one GROUP BY (a sequential
# scan, in parallel on PostgreSQL), the pending holds by another (their partial index on
# status = 'pending' keeps it to the holds in flight), both joined to the wallets. A
# subquery per wallet instead reads the ledger's index once per wallet, and at millions of
# entries reads the table many times over. One statement: one snapshot, so a wallet and its
# sums agree unless something is really wrong. Plain SQL that SQLite runs too.
_AUDITS_FAILING_SQL = """
SELECT w.id, w.posted_micros, coalesce(l.total, 0), w.pending_micros, coalesce(h.total, 0)
  FROM billing_wallet AS w
  LEFT JOIN (SELECT wallet_id, sum(amount_micros) AS total
               FROM billing_ledgerentry GROUP BY wallet_id) AS l ON l.wallet_id = w.id
  LEFT JOIN (SELECT wallet_id, sum(amount_micros) AS total
               FROM billing_hold WHERE status = 'pending' GROUP BY wallet_id) AS h
         ON h.wallet_id = w.id
 WHERE w.posted_micros <> coalesce(l.total, 0) OR w.pending_micros <> coalesce(h.total, 0)
 ORDER BY w.id
"""


def wallet_audits_failing() -> list[WalletAudit]:
    """Every wallet that does not match its ledger or its pending holds, by id."""
    with connection.cursor() as cursor:
        cursor.execute(_AUDITS_FAILING_SQL)
        return [WalletAudit(wallet_id=row[0], posted_micros=row[1],
                            ledger_sum_micros=int(row[2]), pending_micros=row[3],
                            pending_holds_micros=int(row[4]))
                for row in cursor.fetchall()]


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


# What a wallet was credited with (money in, or given back): the credits page lists these.
CREDIT_KINDS = (LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VOUCHER, LedgerEntry.Kind.REFUND,
                LedgerEntry.Kind.ADJUSTMENT)


def wallet_credits_of(*, user: User, limit: int = 50) -> list[LedgerEntry]:
    """The user's latest credits (top-ups, vouchers, refunds, adjustments), newest first.

    Read by kind, not picked out of the latest entries: a busy wallet's latest hundreds of
    entries are all charges. One short scan of the partial index
    ``billing_ledger_wallet_credits`` (wallet, -id) WHERE kind IN (the credit kinds): the
    wallet is looked up first (a scalar subquery), so the scan is on one wallet's credits in
    id order and stops after ``limit`` rows, whatever the number of charges.
    """
    wallet_id = Wallet.objects.filter(user=user).values("pk")[:1]
    return list(LedgerEntry.objects.filter(wallet_id=Subquery(wallet_id),
                                           kind__in=CREDIT_KINDS).order_by("-id")[:limit])
