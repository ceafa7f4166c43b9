"""Staff views of money. The ledger and what produced it are history: viewable, never edited
here. Money moves only through billing.services, called from the actions below."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

# Vouchers and Stripe top-ups have their own module; importing it registers them.
from audit.actors import Actor
from audit.admin_base import AuditedAdmin
from audit.snapshots import Snapshot, snapshot
from billing import admin_records, admin_topups  # noqa: F401
from billing.admin_base import ReadOnlyAdmin
from billing.admin_keyset import KeysetAdminMixin
from billing.admin_refunds import WalletStatementMixin
from billing.admin_search import IndexedSearch, IndexedSearchMixin
from billing.errors import BillingError, IdempotencyConflict
from billing.forms import WalletCreditForm
from billing.models import (
    BalanceAlert,
    KeyBudget,
    LedgerEntry,
    ModelPrice,
    OutboxMessage,
    UsageRollup,
    Wallet,
)
from billing.money import format_usd
from billing.selectors.wallet_check import wallet_check
from billing.services import price_set, wallet_credit
from billing.services.budgets import CAP_FIELDS
from billing.services.prices import PRICE_AUDIT_FIELDS
from router_admin.admin_display import short_text, usd_cell, when


def _usd(micros: int | None) -> str:
    return "-" if micros is None else format_usd(micros)


@admin.register(Wallet)
class WalletAdmin(WalletStatementMixin, ReadOnlyAdmin):
    list_display = ("user", "posted_usd", "pending_usd", "available_usd", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    ordering = ("user__email",)
    fields = ("user", "posted_usd", "pending_usd", "available_usd", "ledger_check",
              "entries", "statements", "created_at", "updated_at")
    readonly_fields = ("posted_usd", "pending_usd", "available_usd", "ledger_check", "entries",
                       "statements")
    actions = ("credit_wallets",)
    credit_template = "admin/billing/wallet/credit.html"

    @admin.display(description="Posted (USD)", ordering="posted_micros")
    def posted_usd(self, obj: Wallet) -> str:
        return usd_cell(obj.posted_micros)

    @admin.display(description="Pending (USD)", ordering="pending_micros")
    def pending_usd(self, obj: Wallet) -> str:
        return usd_cell(obj.pending_micros)

    @admin.display(description="Available (USD)")
    def available_usd(self, obj: Wallet) -> str:
        return usd_cell(obj.available_micros)

    @admin.display(description="Ledger check")
    def ledger_check(self, obj: Wallet) -> str:
        # From the running balance (two index probes), not a re-sum of the history: the
        # full re-sum is ``router reconcile``'s.
        check = wallet_check(wallet_id=obj.pk)
        if check.consistent:
            return ("The ledger and pending holds add up to this wallet's balances (by the "
                    "latest entry's running balance; router reconcile re-sums the history).")
        ledger = ("no ledger entries" if check.ledger_balance_micros is None
                  else f"latest ledger entry's balance {format_usd(check.ledger_balance_micros)}")
        return format_html(
            '<strong class="errornote">MISMATCH: posted {}, {}; pending {}, pending holds {}. '
            "Run <code>router reconcile</code>.</strong>",
            format_usd(check.posted_micros), ledger, format_usd(check.pending_micros),
            format_usd(check.pending_holds_micros))

    @admin.display(description="Ledger entries")
    def entries(self, obj: Wallet) -> str:
        url = reverse("admin:billing_ledgerentry_changelist")
        return format_html('<a href="{}?{}">View this wallet\'s ledger</a>', url,
                           urlencode({"wallet__id__exact": obj.pk}))

    def has_credit_permission(self, request: HttpRequest) -> bool:
        # Crediting writes a ledger entry, so it takes the right to add one.
        return request.user.has_perm("billing.add_ledgerentry")

    @admin.action(description="Credit or adjust, with a reason", permissions=["credit"])
    def credit_wallets(self, request: HttpRequest,
                       queryset: QuerySet[Wallet]) -> TemplateResponse | None:
        # Ordered by id so two staff crediting overlapping selections lock in the same order.
        wallets = list(queryset.select_related("user").order_by("pk"))
        form = WalletCreditForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            try:
                entries = self._credit(request, wallets, form)
            except IdempotencyConflict:
                form.add_error(None, "This form was already submitted with another amount. "
                                     "Go back to the wallets and start a new credit.")
            except BillingError as exc:
                form.add_error(None, str(exc))
            else:
                total = sum(entry.amount_micros for entry in entries)
                self.message_user(request, f"Wrote {len(entries)} ledger "
                                  f"entr{'ies' if len(entries) != 1 else 'y'} totalling "
                                  f"{format_usd(total)} USD.", messages.SUCCESS)
                return None  # back to the changelist
        context = {
            **self.admin_site.each_context(request),
            "title": "Credit or adjust wallets",
            "opts": self.opts,
            "form": form,
            "wallets": wallets,
            "balances": [(w.holder_label, format_usd(w.available_micros)) for w in wallets],
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, self.credit_template, context)

    def _credit(self, request: HttpRequest, wallets: list[Wallet],
                form: WalletCreditForm) -> list[LedgerEntry]:
        # All selected wallets or none: the error shown on the re-displayed form must mean
        # that nothing was written.
        with transaction.atomic():
            return [
                wallet_credit(
                    wallet=wallet, amount_micros=form.amount_micros,
                    kind=form.cleaned_data["kind"],
                    idempotency_key=form.idempotency_key(wallet.pk),
                    memo=form.cleaned_data["reason"], created_by=request.user,
                    actor=Actor.of_request(request),
                )
                for wallet in wallets
            ]


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdmin):
    """Prices are versions: a change is a new row, so records keep the price they paid."""

    audit_name = "price"
    audit_adds = False  # price_set audits the new version against the one it replaces

    list_display = ("model_short", "kind", "input_price", "output_price",
                    "cached_price_shown", "max_output_tokens", "effective", "state")
    list_filter = ("kind", "model")
    list_select_related = ("created_by",)
    search_fields = ("model",)
    add_fields = ("model", "kind", "input_usd_per_mtok", "output_usd_per_mtok",
                  "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "max_output_tokens",
                  "context_length", "effective_from")
    view_fields = (*add_fields, "state", "created_by", "created_at", "new_version")
    readonly_fields = ("state", "new_version")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an existing version is never edited; "add" makes the next one

    def audit_snapshot(self, obj: ModelPrice) -> Snapshot:
        return snapshot(obj, fields=PRICE_AUDIT_FIELDS)

    def get_fields(self, request: HttpRequest, obj: ModelPrice | None = None) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.view_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelPrice]:
        now = timezone.now()
        newer_in_force = ModelPrice.objects.filter(
            model=OuterRef("model"), effective_from__gt=OuterRef("effective_from"),
            effective_from__lte=now,
        )
        return super().get_queryset(request).annotate(superseded=Exists(newer_in_force))

    @admin.display(description="Model", ordering="model")
    def model_short(self, obj: ModelPrice) -> Any:
        return short_text(obj.model, keep=24)

    @admin.display(description="From (UTC)", ordering="effective_from")
    def effective(self, obj: ModelPrice) -> Any:
        return when(obj.effective_from)

    @admin.display(description="In $/1M", ordering="input_usd_per_mtok")
    def input_price(self, obj: ModelPrice) -> Any:
        return format_html('<span class="router-money">{}</span>', obj.input_usd_per_mtok)

    @admin.display(description="Out $/1M", ordering="output_usd_per_mtok")
    def output_price(self, obj: ModelPrice) -> Any:
        return format_html('<span class="router-money">{}</span>', obj.output_usd_per_mtok)

    @admin.display(description="Cached / write $/1M")
    def cached_price_shown(self, obj: ModelPrice) -> Any:
        return format_html('<span class="router-money">{} / {}</span>', obj.cached_price,
                           obj.cache_write_price)

    @admin.display(description="State")
    def state(self, obj: ModelPrice) -> str:
        if obj.effective_from > timezone.now():
            return "scheduled"
        return "superseded" if getattr(obj, "superseded", False) else "in force"

    @admin.display(description="Change this price")
    def new_version(self, obj: ModelPrice) -> str:
        initial = {field: getattr(obj, field) for field in self.add_fields
                   if field != "effective_from" and getattr(obj, field) is not None}
        url = reverse("admin:billing_modelprice_add")
        return format_html('<a href="{}?{}">Add a new version based on this one</a>', url,
                           urlencode(initial))

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: ModelForm,
                   change: bool) -> None:
        data = form.cleaned_data
        created = price_set(
            model=data["model"], input_usd_per_mtok=data["input_usd_per_mtok"],
            output_usd_per_mtok=data["output_usd_per_mtok"],
            cached_input_usd_per_mtok=data.get("cached_input_usd_per_mtok"),
            cache_write_usd_per_mtok=data.get("cache_write_usd_per_mtok"), kind=data["kind"],
            context_length=data.get("context_length"),
            max_output_tokens=data["max_output_tokens"], effective_from=data["effective_from"],
            created_by=request.user, actor=Actor.of_request(request),
        )
        # The admin goes on to log and redirect to ``obj``: make it the row the service wrote.
        for field in ModelPrice._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db


@admin.register(KeyBudget)
class KeyBudgetAdmin(AuditedAdmin):
    """Spend caps per API key. Spent and pending move only with requests."""

    audit_name = "key_budget"

    list_display = ("api_key", "lifetime_limit", "monthly_limit", "spent", "pending",
                    "month", "month_spent")
    search_fields = ("api_key__prefix", "api_key__user__email")
    autocomplete_fields = ("api_key",)
    fields = ("api_key", "lifetime_limit_micros", "monthly_limit_micros", "spent_micros",
              "pending_micros", "month", "month_spent_micros")
    readonly_fields = ("spent_micros", "pending_micros", "month", "month_spent_micros")

    def audit_snapshot(self, obj: KeyBudget) -> Snapshot:
        return snapshot(obj, fields=("api_key", *CAP_FIELDS))

    @admin.display(description="Lifetime cap (USD)")
    def lifetime_limit(self, obj: KeyBudget) -> str:
        return "-" if obj.lifetime_limit_micros is None else format_usd(obj.lifetime_limit_micros)

    @admin.display(description="Monthly cap (USD)")
    def monthly_limit(self, obj: KeyBudget) -> str:
        return "-" if obj.monthly_limit_micros is None else format_usd(obj.monthly_limit_micros)

    @admin.display(description="Spent (USD)")
    def spent(self, obj: KeyBudget) -> str:
        return format_usd(obj.spent_micros)

    @admin.display(description="Pending (USD)")
    def pending(self, obj: KeyBudget) -> str:
        return usd_cell(obj.pending_micros)

    @admin.display(description="Spent this month (USD)")
    def month_spent(self, obj: KeyBudget) -> str:
        return format_usd(obj.month_spent_micros)


@admin.register(UsageRollup)
class UsageRollupAdmin(IndexedSearchMixin, KeysetAdminMixin, ReadOnlyAdmin):
    """Usage per hour and per day, per user, key and model; written by the roll-up job.

    A row per bucket, user, key and model: millions of them, so the list is paged by cursor
    and never counted (billing.admin_keyset), in the order of the index
    (period, bucket_start): the hours, then the days, newest first. No date hierarchy (it
    reads the table's first and last dates and every distinct day) and no model filter (a
    DISTINCT over the table): search by a model's exact name instead. The period and date
    filters only add conditions on that index; the search reads the user's, the key's or
    the organization's index (billing.admin_search)."""

    list_display = ("period", "bucket_start", "user", "api_key", "model", "requests",
                    "failed_requests", "prompt_tokens", "completion_tokens", "cost")
    list_filter = ("period", ("bucket_start", admin.DateFieldListFilter))
    indexed_search = IndexedSearch(api_key="api_key_id", user="user_id",
                                   organization="organization_id", model="model")
    list_select_related = ("user", "api_key")
    keyset_order = ("period", "bucket_start", "id")

    @admin.display(description="Cost (USD)", ordering="cost_micros")
    def cost(self, obj: UsageRollup) -> str:
        return format_usd(obj.cost_micros)


@admin.register(BalanceAlert)
class BalanceAlertAdmin(admin.ModelAdmin):
    list_display = ("user", "threshold", "email", "webhook_url")
    search_fields = ("user__email",)
    autocomplete_fields = ("user",)
    # A webhook typed without a scheme is https, as in the portal's form (and Django 6's
    # default; Django 5 warns that http is assumed).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description="Threshold (USD)", ordering="threshold_micros")
    def threshold(self, obj: BalanceAlert) -> str:
        return format_usd(obj.threshold_micros)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    """What is waiting to go out, and what failed; written and sent by the system only."""

    list_display = ("id", "kind", "user", "created_at", "attempts", "delivered_at",
                    "next_attempt_at", "last_error")
    list_filter = ("kind", ("delivered_at", admin.EmptyFieldListFilter))
    search_fields = ("user__email",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
