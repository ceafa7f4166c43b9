from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class LedgerEntry(models.Model):
    """One movement of a wallet's posted balance. Append-only: the database refuses UPDATE
    and DELETE on this table (see migration 0002), so history cannot be rewritten."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        CHARGE = "charge", "Charge"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"
        VOUCHER = "voucher", "Voucher"
        # Money a card refund took back out of the wallet (billing.models.TopUpRefund).
        CARD_REFUND = "card_refund", "Card refund"

    # Indexed by (wallet, -id) below; a wallet-only index would only slow each insert.
    wallet = models.ForeignKey("billing.Wallet", on_delete=models.PROTECT, related_name="entries",
                               db_index=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_micros = models.BigIntegerField()
    balance_after_micros = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=200, unique=True)
    memo = models.CharField(max_length=500, blank=True)
    # The request id (a hold's id is its request's), with no foreign key in the database:
    # holds are request-level detail, partitioned by month and dropped by the retention
    # policy (billing.services.retention), while the ledger is kept for ever; and PostgreSQL
    # can only reference a partitioned table through a key that holds its partition key.
    # ``entry.hold`` raises Hold.DoesNotExist once its month has been dropped.
    hold = models.ForeignKey("billing.Hold", on_delete=models.PROTECT, null=True, blank=True,
                             related_name="entries", db_index=False, db_constraint=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   null=True, blank=True, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["wallet", "-id"]),
            # A wallet's credits, newest first (the portal's credits list): a few rows among
            # its charges. Partial, so the request path's charge inserts do not maintain it.
            models.Index(fields=["wallet", "-id"], name="billing_ledger_wallet_credits",
                         condition=Q(kind__in=["topup", "voucher", "refund", "adjustment"])),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(amount_micros=0),
                                   name="billing_ledger_amount_not_zero"),
            models.CheckConstraint(condition=Q(balance_after_micros__gte=0),
                                   name="billing_ledger_balance_after_not_negative"),
            # The sign follows the kind: only charges and card refunds take money, only
            # adjustments go both ways.
            models.CheckConstraint(
                condition=Q(kind__in=["charge", "card_refund"], amount_micros__lt=0)
                | Q(kind__in=["topup", "refund", "voucher"], amount_micros__gt=0)
                | Q(kind="adjustment"),
                name="billing_ledger_sign_matches_kind",
            ),
            # A request is refunded once, whatever key a caller picks: one refund per hold.
            # Partial, so the request path's charge inserts do not maintain it.
            models.UniqueConstraint(fields=["hold"], condition=Q(kind="refund"),
                                    name="billing_ledger_one_refund_per_request"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_micros:+d}µ$ ({self.idempotency_key})"
