"""The money panel of a user's admin page: balances, keys, latest requests and credits, and
the credit-or-adjust form, which posts to a view of its own and goes through
``billing.services.wallets.wallet_credit`` (the same service as the wallet admin's action)."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from accounts.forms_wallet import UserWalletCreditForm
from accounts.models import User
from accounts.selectors_overview import user_overview
from audit.actors import Actor
from billing.errors import BillingError, IdempotencyConflict, InsufficientFunds
from billing.money import format_usd
from billing.services.wallets import wallet_credit


def _usd(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    return f"{sign}${format_usd(abs(micros))}"


class UserWalletPanelMixin(admin.ModelAdmin):
    """Mixed into the user admin, before Django's UserAdmin."""

    def get_urls(self) -> list[URLPattern]:
        # Before the admin's own: its catch-all "<object_id>/" would take this path.
        return [
            path("<path:object_id>/wallet-credit/",
                 self.admin_site.admin_view(self.wallet_credit_view),
                 name=f"{self.opts.app_label}_{self.opts.model_name}_wallet_credit"),
            *super().get_urls(),
        ]

    @staticmethod
    def may_see_money(request: HttpRequest) -> bool:
        return request.user.has_perm("billing.view_wallet")

    @staticmethod
    def may_credit(request: HttpRequest) -> bool:
        # Crediting writes a ledger entry, so it takes the right to add one (as the wallets'
        # own credit action does).
        return request.user.has_perm("billing.add_ledgerentry")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = dict(extra_context or {})
        user = self.get_object(request, unquote(object_id))
        if user is not None and self.may_see_money(request):
            context.update(self._panel_context(request, user,
                                               context.get("wallet_credit_form")))
        return super().change_view(request, object_id, form_url, context)

    def _panel_context(self, request: HttpRequest, user: User,
                       form: UserWalletCreditForm | None) -> dict[str, Any]:
        overview = user_overview(user=user)
        if form is None and self.may_credit(request):
            form = UserWalletCreditForm()
        by_user = urlencode({"user__id__exact": user.pk})
        return {
            "user_overview": overview,
            "now_at": timezone.now(),  # what "expired" is measured against
            "wallet_credit_form": form,
            "wallet_credit_url": reverse(f"admin:{self.opts.app_label}_"
                                         f"{self.opts.model_name}_wallet_credit", args=[user.pk]),
            "usage_list_url": f"{reverse('admin:billing_usagerecord_changelist')}?{by_user}",
            "api_key_list_url": f"{reverse('admin:accounts_apikey_changelist')}?{by_user}",
            "ledger_list_url": (
                f"{reverse('admin:billing_ledgerentry_changelist')}?"
                f"{urlencode({'wallet__id__exact': overview.wallet_id})}"
                if overview.wallet_id is not None else None),
        }

    def wallet_credit_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        user = self.get_object(request, unquote(object_id))
        if user is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not (self.has_view_or_change_permission(request, user)
                and self.may_see_money(request) and self.may_credit(request)):
            raise PermissionDenied
        form = UserWalletCreditForm(request.POST)
        if form.is_valid():
            amount = form.amount_micros
            try:
                entry = wallet_credit(
                    user=user, amount_micros=amount, kind=form.cleaned_data["kind"],
                    idempotency_key=form.user_credit_key(user_id=user.pk),
                    memo=form.cleaned_data["reason"], created_by=request.user,
                    actor=Actor.of_request(request),
                )
            except InsufficientFunds as exc:
                form.add_error(None, (
                    f"Cannot remove {_usd(-amount)}: only {_usd(exc.available_micros)} is "
                    "available (the posted balance less what requests in flight hold). "
                    "Nothing was changed."))
            except IdempotencyConflict:
                form.add_error(None, "This form was already submitted with another amount or "
                                     "for another user. Nothing was changed; reload the page "
                                     "to start a new credit.")
            except BillingError as exc:
                form.add_error(None, f"{exc} Nothing was changed.")
            else:
                verb = "Credited" if amount > 0 else "Removed"
                self.message_user(request, (
                    f"{verb} {_usd(abs(amount))} ({entry.get_kind_display().lower()}, ledger "
                    f"entry {entry.pk}). Posted balance now {_usd(entry.balance_after_micros)}."),
                    messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                            args=[user.pk]))
        # Refused: the user's page again, the form showing what was typed and why (its
        # operation id unchanged, so correcting and resubmitting still credits at most once).
        as_get = copy.copy(request)
        as_get.method = "GET"
        return self.change_view(as_get, object_id,
                                extra_context={"wallet_credit_form": form})
