"""Staff pages for refunds and statements, as mixins of the billing admins (billing.admin and
billing.admin_topups) and the admin of card refunds. Each view parses a form and calls one
service or selector; the rules are theirs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audit.actors import Actor
from billing.admin_base import ReadOnlyAdmin
from billing.errors import BillingError
from billing.forms import MonthForm, TopUpRefundForm, UsageRefundForm
from billing.models import CheckoutTopUp, LedgerEntry, UsageRecord, Wallet
from billing.models.topups import TopUpRefund
from billing.money import format_usd
from billing.selectors.statements import (
    BadMonth,
    ledger_month,
    month_parse,
    statement,
    statement_entries,
    statement_months,
)
from billing.services.refunds import usage_refund
from billing.services.topup_refunds import topup_refund, topup_refundable_micros
from portal.statement_csv import ledger_csv_response, statement_csv_response

REFUND_TEMPLATE = "admin/billing/refund_form.html"


def _can_write_ledger(request: HttpRequest) -> bool:
    # A refund writes a ledger entry, so it takes the right to add one (as a credit does).
    return request.user.has_perm("billing.add_ledgerentry")


def _form_page(model_admin: admin.ModelAdmin, request: HttpRequest, *, title: str, obj: Any,
               form: Any, summary: list[tuple[str, str]], note: str = "") -> TemplateResponse:
    context = {**model_admin.admin_site.each_context(request), "title": title,
               "opts": model_admin.opts, "original": obj, "form": form, "summary": summary,
               "note": note, "media": model_admin.media + form.media}
    return TemplateResponse(request, REFUND_TEMPLATE, context)


def _change_url(obj: Any) -> str:
    return reverse(f"admin:billing_{obj._meta.model_name}_change", args=[obj.pk])


class UsageRefundMixin:
    """"Refund this request" on a usage record's page."""

    def get_urls(self) -> list[URLPattern]:
        refund = path("<path:object_id>/refund/", self.admin_site.admin_view(self.refund_view),
                      name="billing_usagerecord_refund")
        return [refund, *super().get_urls()]

    @admin.display(description="Refund")
    def refund(self, obj: UsageRecord) -> str:
        entry = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND,
                                           hold_id=obj.request_id).first()
        if entry is not None:
            return format_html('Refunded {} USD: <a href="{}">ledger entry {}</a> ({})',
                               format_usd(entry.amount_micros), _change_url(entry), entry.pk,
                               entry.memo)
        if not obj.cost_micros:
            return "Nothing was charged."
        return format_html('<a class="button" href="{}">Refund this request</a>',
                           reverse("admin:billing_usagerecord_refund", args=[obj.pk]))

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not _can_write_ledger(request):
            raise PermissionDenied
        record = get_object_or_404(UsageRecord.objects.select_related("user"), pk=object_id)
        form = UsageRefundForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            try:
                result = usage_refund(usage_record=record, reason=form.cleaned_data["reason"],
                                      actor=Actor.of_request(request))
            except BillingError as exc:
                form.add_error(None, str(exc))
            else:
                text = (f"Refunded {format_usd(result.entry.amount_micros)} USD to "
                        f"{record.user.email}." if result.created else
                        "This request was already refunded; nothing more was written.")
                self.message_user(request, text,
                                  messages.SUCCESS if result.created else messages.WARNING)
                return HttpResponseRedirect(_change_url(record))
        return _form_page(self, request, title=f"Refund request {record.request_id}",
                          obj=record, form=form, summary=[
                              ("User", record.user.email), ("Model", record.model),
                              ("Charged (USD)", format_usd(record.cost_micros))],
                          note="The charge goes back to the wallet as one refund entry. The "
                               "key's spend counters and the usage figures keep the charge.")


class TopUpRefundMixin:
    """"Refund to the card" on a card top-up's page."""

    def get_urls(self) -> list[URLPattern]:
        refund = path("<path:object_id>/refund/", self.admin_site.admin_view(self.refund_view),
                      name="billing_checkouttopup_refund")
        return [refund, *super().get_urls()]

    @admin.display(description="Refunds")
    def refunds(self, obj: CheckoutTopUp) -> str:
        rows = list(obj.refunds.order_by("id"))
        parts = [format_html('<a href="{}">{} USD {}</a>', _change_url(r),
                             format_usd(r.amount_micros), r.get_status_display()) for r in rows]
        link = ""
        if obj.status == CheckoutTopUp.Status.PAID and topup_refundable_micros(topup=obj) > 0:
            link = format_html(' <a class="button" href="{}">Refund to the card</a>',
                               reverse("admin:billing_checkouttopup_refund", args=[obj.pk]))
        return format_html("{}{}", ", ".join(parts) or "None", link)

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not _can_write_ledger(request):
            raise PermissionDenied
        topup = get_object_or_404(CheckoutTopUp.objects.select_related("user"), pk=object_id)
        left = topup_refundable_micros(topup=topup)
        form = TopUpRefundForm(request.POST if request.method == "POST" else None,
                               initial={"amount_usd": format_usd(left)})
        if form.is_bound and form.is_valid():
            try:
                refund = topup_refund(topup=topup, amount_micros=form.cleaned_data["amount_usd"],
                                      reason=form.cleaned_data["reason"],
                                      operation_key=form.operation_key(),
                                      actor=Actor.of_request(request))
            except BillingError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, _refund_message(refund), messages.SUCCESS)
                return HttpResponseRedirect(_change_url(topup))
        return _form_page(self, request, title=f"Refund card top-up {topup.pk}", obj=topup,
                          form=form, summary=[
                              ("User", topup.user.email),
                              ("Left to refund (USD)", format_usd(left))],
                          note="Stripe refunds the card. The wallet is debited by the same "
                               "amount as far as its available balance goes, never below "
                               "zero; the rest is recorded as not recovered.")


def _refund_message(refund: TopUpRefund) -> str:
    if refund.debited_at is None:
        return f"Refund {refund.pk} is {refund.get_status_display().lower()}."
    text = (f"Stripe refunded {format_usd(refund.amount_micros)} USD; the wallet was debited "
            f"{format_usd(refund.debited_micros)} USD")
    if refund.unrecovered_micros:
        text += f" and {format_usd(refund.unrecovered_micros)} USD was not recovered"
    return text + "."


class WalletStatementMixin:
    """A wallet's monthly statements (a user's or an organization's), from its page."""

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [path("<path:object_id>/statement/", view(self.statement_view),
                     name="billing_wallet_statement"),
                path("<path:object_id>/statement.csv", view(self.statement_csv_view),
                     name="billing_wallet_statement_csv"),
                *super().get_urls()]

    @admin.display(description="Statements")
    def statements(self, obj: Wallet) -> str:
        return format_html('<a href="{}">Monthly statements</a>',
                           reverse("admin:billing_wallet_statement", args=[obj.pk]))

    def _wallet_and_month(self, request: HttpRequest, object_id: str) -> tuple[Wallet, Any]:
        if not self.has_view_permission(request):
            raise PermissionDenied
        wallet = get_object_or_404(Wallet.objects.select_related("user", "organization"),
                                   pk=object_id)
        value = request.GET.get("month")
        months = list(statement_months(wallet=wallet))
        try:
            month = month_parse(value) if value else (months[0] if months else None)
        except BadMonth:
            raise Http404("No such month.") from None
        return wallet, month

    def statement_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        wallet, month = self._wallet_and_month(request, object_id)
        if month is None:
            self.message_user(request, "This wallet has no ledger entries yet.", messages.INFO)
            return HttpResponseRedirect(_change_url(wallet))
        csv_url = reverse("admin:billing_wallet_statement_csv", args=[wallet.pk])
        shown = statement(wallet=wallet, month=month)
        return TemplateResponse(request, "portal/statement.html", {
            **self.admin_site.each_context(request),
            "base_template": "admin/base_site.html", "opts": self.opts,
            "title": f"Statement of {shown.holder}",
            "statement": shown,
            "months": list(statement_months(wallet=wallet)),
            "page_url": reverse("admin:billing_wallet_statement", args=[wallet.pk]),
            "csv_url": f"{csv_url}?month={month:%Y-%m}",
        })

    def statement_csv_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        wallet, month = self._wallet_and_month(request, object_id)
        if month is None:
            raise Http404("This wallet has no ledger entries yet.")
        return statement_csv_response(statement=statement(wallet=wallet, month=month),
                                      entries=statement_entries(wallet=wallet, month=month))


class LedgerExportMixin:
    """The month's ledger, every wallet, as CSV for accounting."""

    change_list_template = "admin/billing/ledgerentry/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        export = path("export/", self.admin_site.admin_view(self.export_view),
                      name="billing_ledgerentry_export")
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = MonthForm(request.GET if "month" in request.GET else None)
        if form.is_bound and form.is_valid():
            try:
                month = month_parse(form.cleaned_data["month"])
            except BadMonth as exc:
                form.add_error("month", str(exc))
            else:
                return ledger_csv_response(month=month, entries=ledger_month(month=month))
        return TemplateResponse(request, "admin/billing/ledgerentry/export.html", {
            **self.admin_site.each_context(request), "title": "Export a month of the ledger",
            "opts": self.opts, "form": form})


@admin.register(TopUpRefund)
class TopUpRefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "topup", "amount_usd", "debited_usd", "unrecovered_usd",
                    "status", "stripe_refund_id", "created_by")
    list_filter = ("status", "created_at")
    list_select_related = ("topup__user", "created_by")
    search_fields = ("topup__user__email", "=stripe_refund_id")
    fields = ("topup", "amount_usd", "debited_usd", "unrecovered_usd", "status", "reason",
              "stripe_refund_id", "debit_entry", "return_entry", "debited_at", "created_by",
              "created_at", "updated_at")
    readonly_fields = ("amount_usd", "debited_usd", "unrecovered_usd")

    @admin.display(description="Refunded (USD)", ordering="amount_micros")
    def amount_usd(self, obj: TopUpRefund) -> str:
        return format_usd(obj.amount_micros)

    @admin.display(description="Debited (USD)")
    def debited_usd(self, obj: TopUpRefund) -> str:
        return format_usd(obj.debited_micros) if obj.debited_at else "-"

    @admin.display(description="Not recovered (USD)")
    def unrecovered_usd(self, obj: TopUpRefund) -> str:
        return format_usd(obj.unrecovered_micros) if obj.debited_at else "-"
