"""Staff views of top-ups: vouchers (generated here, shown once) and Stripe's records.

Registered by importing this module from billing.admin.
"""

from __future__ import annotations

import base64
import csv
import io
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from audit.actors import Actor
from billing.admin_base import ReadOnlyAdmin
from billing.admin_refunds import TopUpRefundMixin
from billing.errors import BillingError
from billing.forms import VoucherBatchForm
from billing.models import CheckoutTopUp, StripeEvent, Voucher
from billing.money import format_usd
from billing.services.vouchers import voucher_batch_create, vouchers_expire
from billing.voucher_codes import code_digest
from router_admin.admin_display import short_id, short_text, usd_cell, when


class VoucherStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("unused", "Unused"), ("redeemed", "Redeemed"), ("expired", "Expired unused")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Voucher]) -> QuerySet[Voucher]:
        now = timezone.now()
        if self.value() == "unused":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now),
                                   redeemed_at__isnull=True)
        if self.value() == "redeemed":
            return queryset.filter(redeemed_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now, redeemed_at__isnull=True)
        return queryset


@admin.register(Voucher)
class VoucherAdmin(ReadOnlyAdmin):
    """Vouchers are made by "Generate vouchers" and never edited: an amount, once printed
    on a code, must not change. Unused ones can be voided (expired now)."""

    list_display = ("prefix", "amount_usd", "state", "expires_at", "redeemed_by",
                    "created_at")
    list_filter = (VoucherStateFilter, "created_at")
    list_select_related = ("redeemed_by",)
    search_fields = ("code_prefix", "memo", "redeemed_by__email", "=batch")
    fields = ("code_prefix", "amount_usd", "memo", "batch", "state", "created_by",
              "created_at", "expires_at", "redeemed_by", "redeemed_at")
    readonly_fields = ("amount_usd", "state")
    actions = ("expire_now",)
    change_list_template = "admin/billing/voucher/change_list.html"
    generate_template = "admin/billing/voucher/generate.html"

    @admin.display(description="Code", ordering="code_prefix")
    def prefix(self, obj: Voucher) -> str:
        return f"{obj.code_prefix}-…"

    @admin.display(description="Amount (USD)", ordering="amount_micros")
    def amount_usd(self, obj: Voucher) -> Any:
        return usd_cell(obj.amount_micros)

    @admin.display(description="State")
    def state(self, obj: Voucher) -> str:
        if obj.redeemed_at is not None:
            return "redeemed"
        return "expired" if obj.expires_at and obj.expires_at <= timezone.now() else "unused"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Voucher],
                           search_term: str) -> tuple[QuerySet[Voucher], bool]:
        # A whole code pasted into the search box finds its voucher by digest.
        digest = code_digest(search_term)
        if digest is not None:
            return queryset.filter(code_digest=digest), False
        return super().get_search_results(request, queryset, search_term)

    def has_generate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.add_voucher")

    def has_expire_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_voucher")

    @admin.action(description="Void the selected unused vouchers (expire them now)",
                  permissions=["expire"])
    def expire_now(self, request: HttpRequest, queryset: QuerySet[Voucher]) -> None:
        voided = vouchers_expire(voucher_ids=list(queryset.values_list("pk", flat=True)),
                                 actor=Actor.of_request(request))
        self.message_user(request, f"Voided {voided} unused voucher(s); redeemed and already "
                          "expired ones are unchanged.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        generate = path("generate/", self.admin_site.admin_view(self.generate_view),
                        name="billing_voucher_generate")
        return [generate, *super().get_urls()]

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}),
                         "can_generate": self.has_generate_permission(request)}
        return super().changelist_view(request, extra_context)

    def generate_view(self, request: HttpRequest) -> HttpResponse:
        """The form, then the codes, shown this once (admin_view marks the page no-store)."""
        if not self.has_generate_permission(request):
            raise PermissionDenied
        form = VoucherBatchForm(request.POST or None)
        codes: list[str] = []
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                codes = voucher_batch_create(
                    amount_micros=data["amount"], count=data["count"], memo=data["memo"],
                    expires_at=data["expires_at"], created_by=request.user,
                    actor=Actor.of_request(request))
            except BillingError as exc:
                form.add_error(None, str(exc))
        context = {
            **self.admin_site.each_context(request),
            "title": "Generate vouchers" if not codes else f"{len(codes)} new vouchers",
            "opts": self.opts,
            "form": form,
            "codes": codes,
            "csv_data_uri": _csv_data_uri(codes, form) if codes else "",
            "media": self.media + form.media,
        }
        return TemplateResponse(request, self.generate_template, context)


def _csv_data_uri(codes: list[str], form: VoucherBatchForm) -> str:
    """The batch as a CSV file embedded in the page, so the download needs no second
    request: the codes are never kept anywhere the server could serve them from again."""
    data = form.cleaned_data
    expires = data["expires_at"].isoformat() if data["expires_at"] else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["code", "amount_usd", "memo", "expires_at"])
    writer.writerows([code, format_usd(data["amount"]), data["memo"], expires] for code in codes)
    encoded = base64.b64encode(buffer.getvalue().encode()).decode()
    return f"data:text/csv;base64,{encoded}"


@admin.register(CheckoutTopUp)
class CheckoutTopUpAdmin(TopUpRefundMixin, ReadOnlyAdmin):
    list_display = ("created", "user_short", "amount_usd", "status", "credited_usd",
                    "session")
    list_filter = ("status", "created_at")
    list_select_related = ("user", "credited_entry")
    search_fields = ("user__email", "=session_id", "=payment_intent_id")
    fields = ("user", "amount_usd", "currency", "status", "credited_usd", "credited_entry",
              "refunds", "session_id", "payment_intent_id", "created_at", "updated_at")
    readonly_fields = ("amount_usd", "credited_usd", "refunds")

    @admin.display(description="Asked (USD)", ordering="amount_micros")
    def amount_usd(self, obj: CheckoutTopUp) -> Any:
        return usd_cell(obj.amount_micros)

    @admin.display(description="Credited (USD)")
    def credited_usd(self, obj: CheckoutTopUp) -> Any:
        # Stripe's received amount, which can differ from what was asked (see the log).
        return usd_cell(obj.credited_entry.amount_micros if obj.credited_entry else None)

    @admin.display(description="Time (UTC)", ordering="created_at")
    def created(self, obj: CheckoutTopUp) -> Any:
        return when(obj.created_at)

    @admin.display(description="User", ordering="user__email")
    def user_short(self, obj: CheckoutTopUp) -> Any:
        return short_text(obj.user.email)

    @admin.display(description="Checkout session", ordering="session_id")
    def session(self, obj: CheckoutTopUp) -> Any:
        return short_id(obj.session_id, keep=16)


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "received_at")
    list_filter = ("type", "received_at")
    search_fields = ("=event_id",)
