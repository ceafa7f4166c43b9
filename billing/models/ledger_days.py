from __future__ import annotations

from django.db import models
from django.db.models import Q


class LedgerDay(models.Model):
    """A wallet's ledger entries of one day (in the site's time zone), summed per kind and,
    for charges and request refunds, per model of the request: what a monthly statement
    shows, read from a month's thirty-odd rows per wallet instead of its entries (a busy
    wallet has hundreds of thousands a month).

    Recomputed from the ledger a day at a time (``billing.services.ledger_days``), never
    incremented, so a run repeated or late gives the same rows. ``last_entry_id`` is the
    highest ledger id among the row's entries: a statement's opening and closing balances
    are then read from the ledger entry it names (the ledger's own running balance), not
    summed here. Today's rows cover the day up to ``LedgerDayMark.complete_before``;
    readers add the entries written since from the ledger itself.
    """

    wallet = models.ForeignKey("billing.Wallet", on_delete=models.PROTECT, related_name="+",
                               db_index=False)  # the unique constraint leads with it
    day = models.DateField()
    kind = models.CharField(max_length=16)
    # The request's model for charges and request refunds ("" when the request's hold is
    # gone, as a statement read from the ledger shows it); "" for every other kind.
    model = models.CharField(max_length=200, blank=True)
    entries = models.PositiveIntegerField()
    amount_micros = models.BigIntegerField()
    last_entry_id = models.BigIntegerField()

    class Meta:
        # A refresh reads a day of every wallet (the unique key below leads with the wallet).
        indexes = [models.Index(fields=["day"], name="billing_ledgerday_day")]
        constraints = [
            models.UniqueConstraint(fields=["wallet", "day", "kind", "model"],
                                    name="billing_ledgerday_one_row_per_key"),
            models.CheckConstraint(condition=Q(entries__gt=0),
                                   name="billing_ledgerday_entries_positive"),
        ]

    def __str__(self) -> str:
        return f"wallet {self.wallet_id} {self.day} {self.kind} {self.model}"


class LedgerDayMark(models.Model):
    """How far the ledger days go: one row, written in the same transaction as the days it
    vouches for, so a reader in one snapshot sees days and mark agree.

    Every entry created before ``complete_before`` is in a ``LedgerDay`` row; every entry
    created at or after it has an id above ``tail_after_id`` (found from entries written
    well before, so that it holds across the app servers' clocks): a reader finds the rest
    of a wallet's entries in one short range of the ledger's (wallet, id) index.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    complete_before = models.DateTimeField()
    tail_after_id = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="billing_ledgerdaymark_one_row"),
        ]

    def __str__(self) -> str:
        return f"ledger days complete before {self.complete_before:%Y-%m-%d %H:%M:%S}"
