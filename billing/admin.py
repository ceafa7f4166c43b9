"""Staff views of money. The ledger and what produced it are history: viewable, never edited
here. Money moves only through billing.services, called from the actions below."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db import transaction
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
from billing import admin_topups  # noqa: F401
from billing.admin_base import ReadOnlyAdmin
from billing.errors import BillingError, IdempotencyConflict
from billing.forms import WalletCreditForm
from billing.models import (
    BAD_USAGE_REASONS,
    BalanceAlert,
    Hold,
    KeyBudget,
    LedgerEntry,
    ModelPrice,
    OutboxMessage,
    UsageRecord,
    UsageRollup,
    Wallet,
)
from billing.money import format_usd
from billing.selectors import USAGE_FLAGGED, wallet_audit
from billing.services import price_set, wallet_credit
from billing.services.budgets import CAP_FIELDS
from billing.services.prices import PRICE_AUDIT_FIELDS


def _usd(micros: int | None) -> str:
    return "-" if micros is None else format_usd(micros)


class PricedModelFilter(admin.SimpleListFilter):
    """Filter by model name, offering the models that have a price.

    Every hold and usage record points at a price, so these are all the models they can
    name; listing them from the small price table avoids a DISTINCT over a large one.
    """

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = ModelPrice.objects.order_by("model").values_list("model", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(model=self.value()) if self.value() else queryset


class FlaggedUsageFilter(admin.SimpleListFilter):
    """Records that flag a misbehaving upstream, as the workers page counts them: any flag is
    one condition (an OR the separate field filters cannot express), the partial index's."""

    title = "flagged"
    parameter_name = "flagged"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("any", "Any flag"), ("bad_usage", "Usage not believed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "any":
            return queryset.filter(USAGE_FLAGGED)
        if self.value() == "bad_usage":
            return queryset.filter(estimate_reason__in=BAD_USAGE_REASONS)
        return queryset


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ("user", "posted_usd", "pending_usd", "available_usd", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    ordering = ("user__email",)
    fields = ("user", "posted_usd", "pending_usd", "available_usd", "ledger_check",
              "entries", "created_at", "updated_at")
    readonly_fields = ("posted_usd", "pending_usd", "available_usd", "ledger_check", "entries")
    actions = ("credit_wallets",)
    credit_template = "admin/billing/wallet/credit.html"

    @admin.display(description="Posted (USD)", ordering="posted_micros")
    def posted_usd(self, obj: Wallet) -> str:
        return format_usd(obj.posted_micros)

    @admin.display(description="Pending (USD)", ordering="pending_micros")
    def pending_usd(self, obj: Wallet) -> str:
        return format_usd(obj.pending_micros)

    @admin.display(description="Available (USD)")
    def available_usd(self, obj: Wallet) -> str:
        return format_usd(obj.available_micros)

    @admin.display(description="Ledger check")
    def ledger_check(self, obj: Wallet) -> str:
        audit = wallet_audit(wallet_id=obj.pk)
        if audit.consistent:
            return "The ledger and pending holds add up to this wallet's balances."
        return (f"MISMATCH: ledger sum {format_usd(audit.ledger_sum_micros)}, pending holds "
                f"{format_usd(audit.pending_holds_micros)}")

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
            "balances": [(w.user.email, format_usd(w.available_micros)) for w in wallets],
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
                    user=wallet.user, amount_micros=form.amount_micros,
                    kind=form.cleaned_data["kind"],
                    idempotency_key=form.idempotency_key(wallet.pk),
                    memo=form.cleaned_data["reason"], created_by=request.user,
                    actor=Actor.of_request(request),
                )
                for wallet in wallets
            ]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "wallet", "kind", "amount_usd", "balance_after_usd",
                    "memo", "created_by")
    list_filter = ("kind", "created_at")
    list_select_related = ("wallet__user", "created_by")
    search_fields = ("wallet__user__email", "=idempotency_key", "=hold__id", "memo")
    show_full_result_count = False  # the ledger only grows; skip counting all of it
    fields = ("wallet", "kind", "amount_usd", "balance_after_usd", "idempotency_key", "memo",
              "hold", "created_by", "created_at")
    readonly_fields = ("amount_usd", "balance_after_usd")

    @admin.display(description="Amount (USD)", ordering="amount_micros")
    def amount_usd(self, obj: LedgerEntry) -> str:
        return format_usd(obj.amount_micros)

    @admin.display(description="Balance after (USD)")
    def balance_after_usd(self, obj: LedgerEntry) -> str:
        return format_usd(obj.balance_after_micros)


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ("id", "wallet", "model", "amount_usd", "charged_usd", "status",
                    "created_at", "expires_at", "resolved_at")
    list_filter = ("status", PricedModelFilter, "created_at")
    list_select_related = ("wallet__user",)
    search_fields = ("=id", "wallet__user__email", "model")
    show_full_result_count = False
    fields = ("id", "wallet", "api_key", "model", "price", "amount_usd", "charged_usd",
              "status", "created_at", "expires_at", "resolved_at")
    readonly_fields = ("amount_usd", "charged_usd", "created_at")

    @admin.display(description="Reserved (USD)", ordering="amount_micros")
    def amount_usd(self, obj: Hold) -> str:
        return format_usd(obj.amount_micros)

    @admin.display(description="Charged (USD)", ordering="charged_micros")
    def charged_usd(self, obj: Hold) -> str:
        return format_usd(obj.charged_micros)


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("request_id", "user", "endpoint", "model", "prompt_tokens",
                    "completion_tokens", "cached_tokens", "cost_usd", "source",
                    "estimate_reason", "status", "worker", "latency_ms", "created_at")
    # The workers page links here with ?worker=<name>&flagged=any (a plain field lookup the
    # admin accepts): worker names are not listed, that would be a DISTINCT over every record.
    list_filter = ("status", "endpoint", PricedModelFilter, "source", FlaggedUsageFilter,
                   "estimate_reason", "over_cap", "over_hold", "created_at")
    list_select_related = ("user",)
    search_fields = ("=request_id", "user__email", "model")
    show_full_result_count = False
    fields = ("request_id", "user", "api_key", "endpoint", "model", "worker", "price",
              "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
              "cost_usd", "source", "estimate_reason",
              "over_cap", "over_hold", "status", "latency_ms", "ttft_ms", "created_at")
    readonly_fields = ("cost_usd", "created_at")

    @admin.display(description="Cost (USD)", ordering="cost_micros")
    def cost_usd(self, obj: UsageRecord) -> str:
        return format_usd(obj.cost_micros)


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdmin):
    """Prices are versions: a change is a new row, so records keep the price they paid."""

    audit_name = "price"
    audit_adds = False  # price_set audits the new version against the one it replaces

    list_display = ("model", "kind", "input_usd_per_mtok", "output_usd_per_mtok",
                    "cached_input_usd_per_mtok", "cache_write_usd_per_mtok",
                    "max_output_tokens", "effective_from", "state", "created_by")
    list_filter = ("kind", "model")
    list_select_related = ("created_by",)
    search_fields = ("model",)
    add_fields = ("model", "kind", "input_usd_per_mtok", "output_usd_per_mtok",
                  "cached_input_usd_per_mtok", "cache_write_usd_per_mtok", "max_output_tokens",
                  "effective_from")
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
        return format_usd(obj.pending_micros)

    @admin.display(description="Spent this month (USD)")
    def month_spent(self, obj: KeyBudget) -> str:
        return format_usd(obj.month_spent_micros)


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    """Usage per hour and per day, per user, key and model; written by the roll-up job."""

    list_display = ("period", "bucket_start", "user", "api_key", "model", "requests",
                    "failed_requests", "prompt_tokens", "completion_tokens", "cost")
    list_filter = ("period", "model", ("bucket_start", admin.DateFieldListFilter))
    search_fields = ("user__email", "model", "api_key__prefix")
    list_select_related = ("user", "api_key")
    date_hierarchy = "bucket_start"

    @admin.display(description="Cost (USD)", ordering="cost_micros")
    def cost(self, obj: UsageRollup) -> str:
        return format_usd(obj.cost_micros)


@admin.register(BalanceAlert)
class BalanceAlertAdmin(admin.ModelAdmin):
    list_display = ("user", "threshold", "email", "webhook_url")
    search_fields = ("user__email",)
    autocomplete_fields = ("user",)

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
