"""Where top-ups come from: vouchers and Stripe Checkout. The money itself moves only as
ledger entries (kinds ``voucher`` and ``topup``); these rows say why, and make each source
credit once."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Voucher(models.Model):
    """A single-use code worth ``amount_micros``. Codes are bearer credit, so only the
    SHA-256 of the normalised code is stored (see billing/vouchers.py), with a short prefix
    staff can recognise; the code itself is shown once, when the batch is generated."""

    code_digest = models.CharField(max_length=64, unique=True)
    code_prefix = models.CharField(max_length=16)
    amount_micros = models.BigIntegerField()
    # The codes generated together share a batch id and a memo (what they were for).
    batch = models.UUIDField(db_index=True)
    memo = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   null=True, blank=True, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    redeemed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                    null=True, blank=True, related_name="vouchers_redeemed")
    redeemed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_micros__gt=0),
                                   name="billing_voucher_amount_positive"),
            models.CheckConstraint(
                condition=Q(redeemed_by__isnull=True, redeemed_at__isnull=True)
                | Q(redeemed_by__isnull=False, redeemed_at__isnull=False),
                name="billing_voucher_redeemed_by_and_at_together"),
        ]

    def __str__(self) -> str:
        return f"voucher {self.code_prefix}…"


class CheckoutTopUp(models.Model):
    """One Stripe Checkout Session we created for a payer (``user``) to credit ``wallet``:
    their own, or an organization's they pay for. The row is written before the session
    exists so that its id can travel in the session's metadata; the webhook finds it again
    by that id and credits the amount once (``credited_entry``) to ``wallet``."""

    class Status(models.TextChoices):
        CREATING = "creating", "Creating"  # the call to Stripe has not returned yet
        OPEN = "open", "Awaiting payment"
        PAID = "paid", "Paid and credited"
        EXPIRED = "expired", "Expired unpaid"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                             related_name="checkout_topups", db_index=False)
    # Set on every row written since 0019 (which filled it in for the rows before: the
    # payer's own wallet). Nullable so that an insert that leaves it out (a writer older
    # than the column) still means what it meant then; ``wallet_lookup`` reads it so.
    wallet = models.ForeignKey("billing.Wallet", on_delete=models.PROTECT, null=True,
                               blank=True, related_name="checkout_topups", db_index=False)
    amount_micros = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    session_id = models.CharField(max_length=255, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True)
    credited_entry = models.OneToOneField("billing.LedgerEntry", on_delete=models.PROTECT,
                                          null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "-id"]),
                   models.Index(fields=["wallet", "-id"], name="billing_topup_wallet_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(amount_micros__gt=0),
                                   name="billing_checkouttopup_amount_positive"),
            models.UniqueConstraint(fields=["session_id"], condition=~Q(session_id=""),
                                    name="billing_checkouttopup_session_unique"),
            models.UniqueConstraint(fields=["payment_intent_id"],
                                    condition=~Q(payment_intent_id=""),
                                    name="billing_checkouttopup_payment_intent_unique"),
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(credited_entry__isnull=False),
                name="billing_checkouttopup_paid_is_credited"),
        ]

    def __str__(self) -> str:
        return f"checkout top-up {self.pk} ({self.status})"

    @property
    def wallet_lookup(self) -> dict[str, int]:
        """How to find the one wallet this top-up credits (and a refund of it debits): its
        ``wallet``, or for a row without one, the payer's own wallet."""
        if self.wallet_id is not None:
            return {"pk": self.wallet_id}
        return {"user_id": self.user_id}


class StripeEvent(models.Model):
    """A Stripe event we processed. The UNIQUE event id is what makes a redelivery, even
    one racing the first delivery, a no-op: the second insert waits for the first
    transaction and then fails."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class TopUpRefund(models.Model):
    """Money sent back to the card of a paid Checkout top-up, through Stripe's refund API.

    The wallet gives back what the refund returns to the card, but only as far as its
    available balance goes (it may have been spent): ``debited_micros`` is what the ledger
    took back (``debit_entry``, kind ``card_refund``), ``unrecovered_micros`` the rest, which
    the business carries. Both are set once, together (``debited_at``). Started in the admin
    (the row first, so its id can travel in the refund's metadata) or learnt of from Stripe's
    webhook for a refund made in Stripe's dashboard.
    """

    class Status(models.TextChoices):
        CREATING = "creating", "Creating"  # the call to Stripe has not returned yet
        PENDING = "pending", "Pending at Stripe"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"  # Stripe refused it, or the refund failed later
        CANCELED = "canceled", "Canceled"

    topup = models.ForeignKey(CheckoutTopUp, on_delete=models.PROTECT, related_name="refunds")
    amount_micros = models.BigIntegerField()
    debited_micros = models.BigIntegerField(default=0)
    unrecovered_micros = models.BigIntegerField(default=0)
    debited_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    stripe_refund_id = models.CharField(max_length=255, blank=True)
    # The admin form's operation id (a double click submits it twice), or ``stripe:<refund
    # id>`` for a refund learnt of from Stripe.
    idempotency_key = models.CharField(max_length=200, unique=True)
    reason = models.CharField(max_length=500, blank=True)
    debit_entry = models.OneToOneField("billing.LedgerEntry", on_delete=models.PROTECT,
                                       null=True, blank=True, related_name="+")
    # A refund that failed after the wallet was debited gives the debit back (an adjustment).
    return_entry = models.OneToOneField("billing.LedgerEntry", on_delete=models.PROTECT,
                                        null=True, blank=True, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   null=True, blank=True, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_micros__gt=0),
                                   name="billing_topuprefund_amount_positive"),
            models.UniqueConstraint(fields=["stripe_refund_id"], condition=~Q(stripe_refund_id=""),
                                    name="billing_topuprefund_stripe_id_unique"),
            # Not yet applied, or applied in full: what was debited and what was not add up
            # to the refund, neither negative.
            models.CheckConstraint(
                condition=Q(debited_at__isnull=True, debited_micros=0, unrecovered_micros=0)
                | Q(debited_at__isnull=False, debited_micros__gte=0, unrecovered_micros__gte=0,
                    debited_micros=models.F("amount_micros") - models.F("unrecovered_micros")),
                name="billing_topuprefund_debit_adds_up"),
            models.CheckConstraint(
                condition=Q(debited_micros=0, debit_entry__isnull=True)
                | Q(debited_micros__gt=0, debit_entry__isnull=False),
                name="billing_topuprefund_debit_has_entry"),
        ]

    def __str__(self) -> str:
        return f"refund {self.pk} of top-up {self.topup_id} ({self.status})"
