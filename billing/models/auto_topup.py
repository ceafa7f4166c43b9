"""Auto top-up: a wallet charges its saved card off-session when its balance runs low.

``AutoTopUp`` is the wallet's settings and the state that decides whether a charge may start
(one in flight at most, a monthly ceiling); ``AutoTopUpCharge`` is one attempt, written when
the right to charge is claimed and before Stripe is called, so that its id can be the Stripe
idempotency key and travel in the payment's metadata. Everything is keyed by wallet, never by
user: a wallet may belong to a person or to an organization.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class AutoTopUp(models.Model):
    """One wallet's auto top-up. The row exists from the first time its owner saves a card
    or settings; ``enabled`` needs a saved card (the database refuses it otherwise)."""

    # What a new row starts with (a card saved before any settings): off, so nothing is
    # charged until the owner has seen and turned it on.
    DEFAULT_THRESHOLD_MICROS = 5_000_000
    DEFAULT_AMOUNT_MICROS = 20_000_000
    DEFAULT_MONTHLY_CEILING_MICROS = 100_000_000

    wallet = models.OneToOneField("billing.Wallet", on_delete=models.PROTECT,
                                  related_name="auto_topup")
    enabled = models.BooleanField(default=False)
    # Charge when the posted balance is below this (the posted one, like the low-balance
    # alert: holds come and go with every request).
    threshold_micros = models.BigIntegerField()
    amount_micros = models.BigIntegerField()
    monthly_ceiling_micros = models.BigIntegerField()
    # What was charged or is being charged in ``month`` (the first day of a UTC month):
    # a claim adds its amount, a failed charge gives it back. A claim in a later month
    # starts it again from zero.
    month = models.DateField()
    month_total_micros = models.BigIntegerField(default=0)
    # The charge started and not yet succeeded or failed; NULL is the right to start one.
    in_flight_charge = models.OneToOneField("billing.AutoTopUpCharge", on_delete=models.PROTECT,
                                            null=True, blank=True, related_name="+")
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    payment_method_id = models.CharField(max_length=255, blank=True)
    # Shown to the owner; filled in from Stripe when a card is saved (or soon after).
    card_brand = models.CharField(max_length=32, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    # Why it was switched off by the system (a declined card...); empty once re-enabled.
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_micros__gt=0),
                                   name="billing_autotopup_amount_positive"),
            models.CheckConstraint(condition=Q(threshold_micros__gte=0),
                                   name="billing_autotopup_threshold_not_negative"),
            models.CheckConstraint(condition=Q(monthly_ceiling_micros__gte=F("amount_micros")),
                                   name="billing_autotopup_ceiling_covers_amount"),
            models.CheckConstraint(condition=Q(month_total_micros__gte=0),
                                   name="billing_autotopup_month_total_not_negative"),
            models.CheckConstraint(condition=Q(enabled=False) | ~Q(payment_method_id=""),
                                   name="billing_autotopup_enabled_has_card"),
            # A Stripe customer is one wallet's: a saved card is never used for another.
            models.UniqueConstraint(fields=["stripe_customer_id"],
                                    condition=~Q(stripe_customer_id=""),
                                    name="billing_autotopup_customer_unique"),
        ]

    def __str__(self) -> str:
        return f"auto top-up of wallet {self.wallet_id} ({'on' if self.enabled else 'off'})"


class AutoTopUpCharge(models.Model):
    """One off-session charge of a wallet's saved card; credited once, by the webhook."""

    class Status(models.TextChoices):
        CLAIMED = "claimed", "Claimed"  # the right to charge is ours; Stripe not answered yet
        PROCESSING = "processing", "Processing"  # Stripe has the payment intent
        SUCCEEDED = "succeeded", "Succeeded and credited"
        FAILED = "failed", "Failed"

    IN_FLIGHT = (Status.CLAIMED, Status.PROCESSING)

    wallet = models.ForeignKey("billing.Wallet", on_delete=models.PROTECT,
                               related_name="auto_topup_charges", db_index=False)
    amount_micros = models.BigIntegerField()
    month = models.DateField()  # the month whose total this charge counts in
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CLAIMED)
    # The card charged, copied at the claim: a request sent again after a crash must be the
    # same request (Stripe refuses an idempotency key reused with other parameters).
    stripe_customer_id = models.CharField(max_length=255)
    payment_method_id = models.CharField(max_length=255)
    payment_intent_id = models.CharField(max_length=255, blank=True)
    credited_entry = models.OneToOneField("billing.LedgerEntry", on_delete=models.PROTECT,
                                          null=True, blank=True, related_name="+")
    failure_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["wallet", "-id"], name="billing_autotopupcharge_wallet"),
                   # The reconciler's query: charges Stripe has not settled for us yet.
                   models.Index(fields=["created_at"], condition=Q(status__in=["claimed",
                                                                               "processing"]),
                                name="billing_autotopupcharge_open")]
        constraints = [
            models.CheckConstraint(condition=Q(amount_micros__gt=0),
                                   name="billing_autotopupcharge_amount_positive"),
            models.CheckConstraint(condition=~Q(status="succeeded")
                                   | Q(credited_entry__isnull=False),
                                   name="billing_autotopupcharge_succeeded_is_credited"),
            models.UniqueConstraint(fields=["payment_intent_id"],
                                    condition=~Q(payment_intent_id=""),
                                    name="billing_autotopupcharge_intent_unique"),
            # Never two in flight for one wallet, whatever code path writes.
            models.UniqueConstraint(fields=["wallet"],
                                    condition=Q(status__in=["claimed", "processing"]),
                                    name="billing_autotopupcharge_one_in_flight"),
        ]

    def __str__(self) -> str:
        return f"auto top-up charge {self.pk} of wallet {self.wallet_id} ({self.status})"
