"""The auto top-up settings form: USD amounts as a person types them, checked to exact
micro-USD (never a float); ``billing.services.auto_topup`` decides the rest (card top-up
bounds, a saved card to turn it on)."""

from __future__ import annotations

from typing import Any

from django import forms

from billing.money import micros_to_usd
from billing.selectors import AutoTopUpState
from portal.forms import parse_usd


def _usd_input(micros: int) -> str:
    """As typed back into a field: 12.5, not 12.500000."""
    return f"{micros_to_usd(micros).normalize():f}"


class AutoTopUpForm(forms.Form):
    enabled = forms.BooleanField(label="Top up automatically", required=False)
    threshold_usd = forms.CharField(
        label="When the balance falls below (USD)", max_length=32,
        help_text="Compared with the balance after each request's charge, within a minute.")
    amount_usd = forms.CharField(
        label="Add (USD)", max_length=32,
        help_text="Charged to the saved card each time: $5 to $10,000, whole cents.")
    monthly_ceiling_usd = forms.CharField(
        label="At most, per calendar month (USD)", max_length=32,
        help_text="Auto top-ups made or in progress this month (UTC) never go past it.")

    @classmethod
    def initial_for(cls, state: AutoTopUpState) -> dict[str, Any]:
        return {"enabled": state.enabled, "threshold_usd": _usd_input(state.threshold_micros),
                "amount_usd": _usd_input(state.amount_micros),
                "monthly_ceiling_usd": _usd_input(state.monthly_ceiling_micros)}

    def clean_threshold_usd(self) -> int:
        return parse_usd(self.cleaned_data["threshold_usd"], allow_zero=False)

    def clean_amount_usd(self) -> int:
        return parse_usd(self.cleaned_data["amount_usd"], allow_zero=False)

    def clean_monthly_ceiling_usd(self) -> int:
        return parse_usd(self.cleaned_data["monthly_ceiling_usd"], allow_zero=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        amount, ceiling = data.get("amount_usd"), data.get("monthly_ceiling_usd")
        if amount is not None and ceiling is not None and ceiling < amount:
            self.add_error("monthly_ceiling_usd",
                           "The monthly ceiling must be at least the amount of one top-up.")
        return data
