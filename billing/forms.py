"""Forms for staff operations on money. They parse input; billing.services decide."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError

from billing.models import LedgerEntry
from billing.money import MICROS_PER_CENT, MoneyError, usd_to_micros
from billing.topup_limits import VOUCHER_BATCH_MAX

# A typo guard, not a business rule: a billion dollars is far past any real credit, and
# anything that could overflow the BigIntegerField is refused here rather than by the database.
MAX_CREDIT_USD = Decimal("1000000000")


class WalletCreditForm(forms.Form):
    """Credit (or, as an adjustment, debit) the selected wallets, with a reason for the ledger."""

    amount_usd = forms.CharField(
        label="Amount (USD)", max_length=32,
        help_text="Up to 6 decimals, e.g. 10 or 0.25. A negative amount removes money and "
        "is only allowed as an adjustment.",
    )
    kind = forms.ChoiceField(
        choices=[(LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.TOPUP.label),
                 (LedgerEntry.Kind.ADJUSTMENT, LedgerEntry.Kind.ADJUSTMENT.label)],
        initial=LedgerEntry.Kind.ADJUSTMENT,
    )
    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on the ledger entry as its memo.",
    )
    # Fixed when the form is first shown and sent back with it, so submitting the same form
    # twice (a double click, a browser retry) reuses the idempotency key and credits once.
    operation_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_amount_usd(self) -> str:
        raw = self.cleaned_data["amount_usd"].strip()
        try:
            micros = usd_to_micros(raw)
        except MoneyError as exc:
            raise ValidationError(str(exc), code="invalid") from None
        if abs(micros) > usd_to_micros(MAX_CREDIT_USD):
            raise ValidationError(f"The amount cannot exceed {MAX_CREDIT_USD} USD either way.",
                                  code="too_large")
        return raw

    @property
    def amount_micros(self) -> int:
        return usd_to_micros(self.cleaned_data["amount_usd"])

    def idempotency_key(self, wallet_id: int) -> str:
        # One key per wallet: a single submission may credit several wallets.
        return f"admin:{self.cleaned_data['operation_id']}:{wallet_id}"


class VoucherBatchForm(forms.Form):
    """Generate a batch of vouchers; the bounds are billing.topup_limits'."""

    # Typed in USD, cleaned to micro-USD.
    amount = forms.CharField(label="Amount per code (USD)", max_length=32,
                             help_text="What each code credits, e.g. 10 or 2.50.")
    count = forms.IntegerField(label="Number of codes", min_value=1,
                               max_value=VOUCHER_BATCH_MAX)
    memo = forms.CharField(max_length=200, required=False,
                           help_text="What the batch is for (a campaign, an event). Staff see it.")
    expires_at = forms.DateTimeField(
        label="Expires at", required=False,
        help_text="Optional, e.g. 2030-12-31 23:59 (in the site's time zone).")

    def clean_amount(self) -> int:
        try:
            return usd_to_micros(self.cleaned_data["amount"])
        except MoneyError as exc:
            raise ValidationError(str(exc), code="invalid") from None


class UsageRefundForm(forms.Form):
    """Refund one request's charge. No operation id: the request id already makes it once."""

    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on the refund's ledger entry as its memo, and in the audit trail.")


class TopUpRefundForm(forms.Form):
    """Refund (part of) a card top-up to the card through Stripe."""

    amount_usd = forms.CharField(
        label="Amount (USD)", max_length=32,
        help_text="In whole cents, at most what is left to refund of this top-up.")
    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on the refund and in the audit trail.")
    # As on the credit form: a double click or a retried POST sends the same id, which finds
    # the same refund (and Stripe the same idempotency key) instead of refunding twice.
    operation_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_amount_usd(self) -> int:
        try:
            micros = usd_to_micros(self.cleaned_data["amount_usd"].strip())
        except MoneyError as exc:
            raise ValidationError(str(exc), code="invalid") from None
        if micros <= 0 or micros % MICROS_PER_CENT:
            raise ValidationError("A card refund is a positive amount in whole cents.",
                                  code="invalid")
        return micros

    def operation_key(self) -> str:
        return f"admin:{self.cleaned_data['operation_id']}"


class MonthForm(forms.Form):
    month = forms.RegexField(regex=r"^\d{4}-\d{2}$", max_length=7,
                             help_text="YYYY-MM, in the site's time zone.")
