"""A wallet's check for its admin page, at the cost of two index probes whatever its
history: the posted balance against the running balance its latest ledger entry carries
(``balance_after_micros``, by the ``(wallet, -id)`` index), and the pending balance against
its pending holds (by the pending holds' partial index, which holds only requests in
flight).

Every ledger entry is written in the same transaction as the wallet update it records, with
the balance it leaves, so the latest entry's running balance is what the wallet must show;
a wallet moved by anything but a ledger entry (a hand-run UPDATE, a bug) disagrees with it
at once. Re-summing the whole history, the stronger check, is ``router reconcile``'s
(``billing.selectors.wallets``): a page view must not cost a read of millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import Hold, LedgerEntry, Wallet


@dataclass(frozen=True)
class WalletCheck:
    wallet_id: int
    posted_micros: int
    # The latest entry's balance after it; None: the wallet has no entries yet.
    ledger_balance_micros: int | None
    pending_micros: int
    pending_holds_micros: int

    @property
    def ledger_consistent(self) -> bool:
        return self.posted_micros == (self.ledger_balance_micros or 0)

    @property
    def consistent(self) -> bool:
        return self.ledger_consistent and self.pending_micros == self.pending_holds_micros


def wallet_check(*, wallet_id: int) -> WalletCheck:
    """The wallet's balances beside what its latest ledger entry and pending holds say, in
    one query so that all four numbers come from the same snapshot."""
    latest = (LedgerEntry.objects.filter(wallet=OuterRef("pk")).order_by("-id")
              .values("balance_after_micros")[:1])
    # The condition of the partial index billing_hold_pending_expiry, so the sum reads the
    # holds in flight, not every hold the wallet ever had. The wallet is compared as
    # ``wallet_id + 0``, which no index answers: given the wallet's own index, PostgreSQL
    # ANDed it with the partial one, reading every hold of a busy wallet's month (88,000
    # at 10M records: 3 ms) to find the few in flight.
    pending = (Hold.objects.filter(status=Hold.Status.PENDING)
               .annotate(wallet_plus_zero=F("wallet_id") + 0)
               .filter(wallet_plus_zero=OuterRef("pk"))
               .order_by().values("wallet").annotate(s=Sum("amount_micros")).values("s"))
    row = (Wallet.objects.filter(pk=wallet_id)
           .annotate(ledger_balance=Subquery(latest),
                     holds_sum=Coalesce(Subquery(pending), Value(0)))
           .values("posted_micros", "pending_micros", "ledger_balance", "holds_sum").get())
    return WalletCheck(wallet_id=wallet_id, posted_micros=row["posted_micros"],
                       ledger_balance_micros=row["ledger_balance"],
                       pending_micros=row["pending_micros"],
                       pending_holds_micros=row["holds_sum"])
