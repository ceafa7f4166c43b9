"""Forms of the portal. They parse and check what a person typed; the services of
``accounts`` and ``billing`` decide. None of them has an owner, balance or secret field: what
they do not declare, they cannot be made to write."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from accounts.errors import AccountsError
from accounts.models import ApiKey, User
from accounts.policies import clean_allowed_ips, clean_allowed_models
from billing.models import UsageRecord
from billing.money import MoneyError, micros_to_usd, usd_to_micros
from billing.selectors import SpendCaps, UsageFilters, key_spend_caps
from billing.services.billing_profiles import (
    BILLING_NAME_MAX,
    BillingProfileInvalid,
    billing_address_clean,
    billing_name_clean,
)
from portal.throttle import (
    RESET_EMAILS_PER_ADDRESS,
    RESET_EMAILS_PER_MAILBOX,
    WINDOW_SECONDS,
    SignInThrottle,
    client_address,
)

# A typo guard, not a business rule: nothing a person types here is anywhere near it, and it
# keeps every amount far inside a BigIntegerField.
MAX_USD = Decimal("1000000")
LIMIT_MAX = 2_147_483_647  # what the PositiveIntegerField columns hold


def parse_usd(raw: str, *, allow_zero: bool = True) -> int:
    """A USD amount typed by a person, as exact micro-USD, or a ValidationError saying why."""
    raw = raw.strip().removeprefix("$").replace(",", "").strip()
    try:
        micros = usd_to_micros(raw)
    except MoneyError as exc:
        raise ValidationError(str(exc), code="invalid") from None
    if micros < 0 or (micros == 0 and not allow_zero):
        raise ValidationError("Enter an amount more than zero." if not allow_zero
                              else "Enter an amount of zero or more.", code="invalid")
    if micros > usd_to_micros(MAX_USD):
        raise ValidationError(f"Enter at most {MAX_USD} USD.", code="too_large")
    return micros


def _usd_input(micros: int | None) -> str:
    """An amount as it is shown back in a form field: 12.5, not 12.500000."""
    if micros is None:
        return ""
    return f"{micros_to_usd(micros).normalize():f}"


def _split_list(raw: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", raw) if item]


class SignUpForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(
        attrs={"autocomplete": "email", "autofocus": True}))
    password1 = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput(
        attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html())
    password2 = forms.CharField(label="Password again", strip=False,
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords differ.")
        elif password1:
            try:
                # An unsaved user, so the similarity check compares with the email address.
                password_validation.validate_password(
                    password1, User(email=cleaned.get("email", "")))
            except ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class SignInForm(AuthenticationForm):
    """Django's sign-in form, refusing to check a password once the address or the account
    has had too many failures (see ``portal.throttle``)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": ("Too many failed sign-in attempts. Wait %(minutes)d minutes and try "
                      "again, or reset your password."),
    }

    def clean(self) -> dict[str, Any]:
        throttle = SignInThrottle.for_request(self.request, self.data.get("username", ""))
        if throttle.blocked():
            # Checked before the password, so a blocked guess learns nothing from its answer.
            raise ValidationError(self.error_messages["throttled"], code="throttled",
                                  params={"minutes": WINDOW_SECONDS // 60})
        try:
            cleaned = super().clean()
        except ValidationError:
            throttle.record_failure()
            raise
        throttle.record_success()
        return cleaned


class ResetRequestForm(PasswordResetForm):
    """Django's password-reset form, sending at most a few emails an hour to one mailbox
    and for one client address, so nobody can flood an inbox through us. The answer looks
    the same whether or not the address has an account."""

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        address = client_address(self.request) if self.request is not None else ""
        if not (RESET_EMAILS_PER_MAILBOX.take(email) and RESET_EMAILS_PER_ADDRESS.take(address)):
            raise ValidationError("Too many reset emails were asked for. Wait an hour and try "
                                  "again.", code="throttled")
        return email


class ApiKeyForm(forms.Form):
    """A key's name and policies: used to create a key and to edit one."""

    name = forms.CharField(max_length=100, required=False,
                           help_text="To tell your keys apart, e.g. “production”.")
    rpm = forms.IntegerField(label="Requests per minute", required=False, min_value=1,
                             max_value=LIMIT_MAX)
    tpm = forms.IntegerField(label="Tokens per minute", required=False, min_value=1,
                             max_value=LIMIT_MAX)
    max_concurrency = forms.IntegerField(label="Requests in flight", required=False,
                                         min_value=1, max_value=LIMIT_MAX)
    lifetime_cap_usd = forms.CharField(label="Lifetime spend cap (USD)", required=False,
                                       max_length=32)
    monthly_cap_usd = forms.CharField(label="Monthly spend cap (USD)", required=False,
                                      max_length=32, help_text="Per calendar month, UTC.")
    expires_at = forms.DateTimeField(
        label="Expires (UTC)", required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                       "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1},
                                   format="%Y-%m-%dT%H:%M:%S"))
    allowed_models = forms.CharField(
        required=False, max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "gpt-4o-mini"}),
        help_text="Model names, one per line or separated by commas. Empty: every model.")
    allowed_ips = forms.CharField(
        label="Allowed IPs", required=False, max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "203.0.113.0/24"}),
        help_text="Addresses or networks (CIDR), one per line or separated by commas. "
        "Empty: any address.")

    @classmethod
    def initial_for(cls, api_key: ApiKey) -> dict[str, Any]:
        caps = key_spend_caps(api_key=api_key)
        return {
            "name": api_key.name, "rpm": api_key.rpm, "tpm": api_key.tpm,
            "max_concurrency": api_key.max_concurrency,
            "lifetime_cap_usd": _usd_input(caps.lifetime_limit_micros),
            "monthly_cap_usd": _usd_input(caps.monthly_limit_micros),
            "expires_at": api_key.expires_at,
            "allowed_models": "\n".join(api_key.allowed_models),
            "allowed_ips": "\n".join(api_key.allowed_ips),
        }

    def clean_lifetime_cap_usd(self) -> int | None:
        raw = self.cleaned_data["lifetime_cap_usd"].strip()
        return parse_usd(raw) if raw else None

    def clean_monthly_cap_usd(self) -> int | None:
        raw = self.cleaned_data["monthly_cap_usd"].strip()
        return parse_usd(raw) if raw else None

    def clean_expires_at(self) -> datetime | None:
        value = self.cleaned_data["expires_at"]
        kept = self.initial.get("expires_at")
        # The field shows whole seconds; sent back unchanged, it means the expiry as it was.
        if value is not None and kept is not None and value == kept.replace(microsecond=0):
            return kept
        if value is not None and value <= timezone.now() and value != kept:
            raise ValidationError("Choose a time in the future, or leave it empty.")
        return value

    def clean_allowed_models(self) -> list[str]:
        try:
            return clean_allowed_models(_split_list(self.cleaned_data["allowed_models"]))
        except AccountsError as exc:
            raise ValidationError(str(exc)) from None

    def clean_allowed_ips(self) -> list[str]:
        try:
            return clean_allowed_ips(_split_list(self.cleaned_data["allowed_ips"]))
        except AccountsError as exc:
            raise ValidationError(str(exc)) from None

    def key_policies(self) -> dict[str, Any]:
        """The keyword arguments of ``api_key_create`` / ``api_key_update``."""
        return {field: self.cleaned_data[field] for field in (
            "name", "expires_at", "rpm", "tpm", "max_concurrency", "allowed_models",
            "allowed_ips")}

    def spend_caps(self) -> SpendCaps:
        return SpendCaps(lifetime_limit_micros=self.cleaned_data["lifetime_cap_usd"],
                         monthly_limit_micros=self.cleaned_data["monthly_cap_usd"])


class VoucherForm(forms.Form):
    code = forms.CharField(max_length=64, widget=forms.TextInput(
        attrs={"autocomplete": "off", "spellcheck": "false",
               "placeholder": "BR-XXXX-XXXX-XXXX-XXXX"}))


class CheckoutForm(forms.Form):
    amount_usd = forms.CharField(label="Amount (USD)", max_length=32, initial="20",
                                 widget=forms.TextInput(attrs={"inputmode": "decimal"}))

    def clean_amount_usd(self) -> int:
        return parse_usd(self.cleaned_data["amount_usd"], allow_zero=False)


# The usage list's status for requests refused before any charge (402, 429): they are
# counted per key and minute in ``RefusedRequests``, not recorded one by one.
REFUSED = "refused"


class UsageFilterForm(forms.Form):
    """The filters of the usage table and its CSV export, read from the query string."""

    model = forms.CharField(required=False, max_length=200)
    key = forms.IntegerField(required=False, min_value=1)
    status = forms.ChoiceField(required=False,
                               choices=[("", "Any status"), *UsageRecord.Status.choices,
                                        (REFUSED, "Refused (not charged)")])
    endpoint = forms.ChoiceField(required=False, choices=[("", "Any endpoint"),
                                                          *UsageRecord.Endpoint.choices])
    since = forms.DateField(label="From", required=False,
                            widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To", required=False,
                            widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="Inclusive.")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date is before the start date.")
        return cleaned

    def filters(self) -> UsageFilters:
        if not self.is_valid():
            return UsageFilters()
        data = self.cleaned_data
        utc = timezone.get_current_timezone()

        def midnight(day: Any) -> datetime:
            return datetime.combine(day, time.min, tzinfo=utc)

        return UsageFilters(
            model=data["model"].strip(), api_key_id=data["key"], status=data["status"],
            endpoint=data["endpoint"], since=midnight(data["since"]) if data["since"] else None,
            until=midnight(data["until"] + timedelta(days=1)) if data["until"] else None,
        )


class BalanceAlertForm(forms.Form):
    threshold_usd = forms.CharField(
        label="Alert me when my balance falls below (USD)", required=False, max_length=32,
        help_text="Leave empty to turn the alert off.")
    email = forms.BooleanField(label="By email", required=False, initial=True)
    webhook_url = forms.URLField(label="And to this webhook (optional)", required=False,
                                 max_length=200, assume_scheme="https",
                                 help_text="An http(s) address on the public internet.")

    @classmethod
    def initial_for(cls, alert: Any) -> dict[str, Any]:
        if alert is None:
            return {"email": True}
        return {"threshold_usd": _usd_input(alert.threshold_micros), "email": alert.email,
                "webhook_url": alert.webhook_url}

    def clean_threshold_usd(self) -> int | None:
        raw = self.cleaned_data["threshold_usd"].strip()
        return parse_usd(raw, allow_zero=False) if raw else None


class BillingDetailsForm(forms.Form):
    """The name and address receipts are made out to. The rules are billing's
    (``billing_name_clean``, ``billing_address_clean``), checked here to show them by field."""

    billing_name = forms.CharField(
        label="Name on receipts", required=False, max_length=BILLING_NAME_MAX,
        widget=forms.TextInput(attrs={"autocomplete": "organization"}),
        help_text="A person or a company. Empty: your email address.")
    # A generous bound on what is read at all; the address's own limits are billing's.
    billing_address = forms.CharField(
        label="Billing address", required=False, max_length=5_000,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "street-address"}),
        help_text="As it should read on receipts: street, city, country, and a tax number "
        "if you need one.")

    @classmethod
    def initial_for(cls, wallet: Any) -> dict[str, str]:
        return {"billing_name": wallet.billing_name, "billing_address": wallet.billing_address}

    def clean_billing_name(self) -> str:
        try:
            return billing_name_clean(self.cleaned_data["billing_name"])
        except BillingProfileInvalid as exc:
            raise ValidationError(str(exc), code="invalid") from None

    def clean_billing_address(self) -> str:
        try:
            return billing_address_clean(self.cleaned_data["billing_address"])
        except BillingProfileInvalid as exc:
            raise ValidationError(str(exc), code="invalid") from None
