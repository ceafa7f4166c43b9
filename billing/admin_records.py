"""The admin of what requests leave behind: ledger entries, holds, usage records and the
counts of refused requests (read only; a request's refund is the one action). Each is a
table that grows with every request, so each list is paged by cursor and never counted
(billing.admin_keyset)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

# Vouchers and Stripe top-ups have their own module; importing it registers them.
from billing import admin_topups  # noqa: F401
from billing.admin_base import ReadOnlyAdmin
from billing.admin_keyset import KeysetAdminMixin
from billing.admin_refunds import LedgerExportMixin, UsageRefundMixin
from billing.admin_search import IndexedSearch, IndexedSearchMixin
from billing.keyset import BY_ID
from billing.models import (
    BAD_USAGE_REASONS,
    Hold,
    LedgerEntry,
    ModelPrice,
    RefusedRequests,
    UsageRecord,
)
from billing.selectors import USAGE_FLAGGED
from billing.services.refunds import refund_key
from router_admin.admin_display import short_id, short_text, usd_cell, when


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


@admin.register(LedgerEntry)
class LedgerEntryAdmin(LedgerExportMixin, IndexedSearchMixin, KeysetAdminMixin, ReadOnlyAdmin):
    # What fits 1280 px: the id, who made it and the full memo are on the entry's page.
    list_display = ("created", "user", "kind", "amount_usd", "balance_after_usd",
                    "memo_short")
    list_filter = ("kind", "created_at")
    list_select_related = ("wallet__user", "wallet__organization", "created_by")
    # A request's charge and refund, or any entry by its whole idempotency key (a Stripe
    # payment's "stripe:pi_...", a voucher's "voucher:<id>"), through the key's unique index.
    indexed_search = IndexedSearch(
        request=lambda term: Q(idempotency_key__in=[term, f"charge:{term}", refund_key(term)]),
        wallet="wallet_id")
    # The ledger only grows: paged by cursor on its primary key (or (wallet, -id) for one
    # wallet's), never counted.
    keyset_order = BY_ID
    fields = ("wallet", "kind", "amount_usd", "balance_after_usd", "idempotency_key", "memo",
              "hold", "created_by", "created_at")
    readonly_fields = ("amount_usd", "balance_after_usd")

    @admin.display(description="Time (UTC)", ordering="created_at")
    def created(self, obj: LedgerEntry) -> Any:
        return when(obj.created_at)

    @admin.display(description="Wallet of")
    def user(self, obj: LedgerEntry) -> Any:
        return short_text(obj.wallet.holder_label)

    @admin.display(description="Memo")
    def memo_short(self, obj: LedgerEntry) -> Any:
        return short_id(obj.memo, keep=40) if obj.memo else ""

    @admin.display(description="Amount (USD)", ordering="amount_micros")
    def amount_usd(self, obj: LedgerEntry) -> Any:
        return usd_cell(obj.amount_micros)

    @admin.display(description="Balance after (USD)")
    def balance_after_usd(self, obj: LedgerEntry) -> Any:
        return usd_cell(obj.balance_after_micros)


@admin.register(Hold)
class HoldAdmin(IndexedSearchMixin, KeysetAdminMixin, ReadOnlyAdmin):
    list_display = ("short_id", "user", "model_short", "amount_usd", "charged_usd", "status",
                    "created")
    list_filter = ("status", PricedModelFilter, "created_at")
    list_select_related = ("wallet__user", "wallet__organization")
    # Not by key: a hold's key has no index (every hold is written on the request path).
    indexed_search = IndexedSearch(request=lambda term: Q(id=term), wallet="wallet_id",
                                   model="model")
    fields = ("id", "wallet", "api_key", "model", "price", "amount_usd", "charged_usd",
              "status", "created_at", "expires_at", "resolved_at")
    readonly_fields = ("amount_usd", "charged_usd", "created_at")

    @admin.display(description="Request", ordering="id")
    def short_id(self, obj: Hold) -> Any:
        return short_id(obj.pk)

    @admin.display(description="Wallet of")
    def user(self, obj: Hold) -> Any:
        return short_text(obj.wallet.holder_label)

    @admin.display(description="Model", ordering="model")
    def model_short(self, obj: Hold) -> Any:
        return short_text(obj.model, keep=24)

    @admin.display(description="Time (UTC)", ordering="created_at")
    def created(self, obj: Hold) -> Any:
        return when(obj.created_at)

    @admin.display(description="Reserved (USD)", ordering="amount_micros")
    def amount_usd(self, obj: Hold) -> Any:
        return usd_cell(obj.amount_micros)

    @admin.display(description="Charged (USD)", ordering="charged_micros")
    def charged_usd(self, obj: Hold) -> Any:
        return usd_cell(obj.charged_micros)


@admin.register(UsageRecord)
class UsageRecordAdmin(UsageRefundMixin, IndexedSearchMixin, KeysetAdminMixin, ReadOnlyAdmin):
    # What fits 1280 px; cache tokens, the source of the count and latency are on the
    # record's page, and source, reason and the flags are filters.
    list_display = ("created", "request", "user_short", "endpoint", "model_short", "tokens",
                    "cost_usd", "upstream_cost_usd", "status", "worker")
    # The workers page links here with ?worker=<name>&flagged=any (a plain field lookup the
    # admin accepts): worker names are not listed, that would be a DISTINCT over every record.
    list_filter = ("status", "endpoint", PricedModelFilter, "source", FlaggedUsageFilter,
                   "estimate_reason", "over_cap", "over_hold", "created_at")
    list_select_related = ("user",)
    indexed_search = IndexedSearch(request=lambda term: Q(request_id=term),
                                   api_key="api_key_id", user="user_id",
                                   organization="organization_id", model="model")
    fields = ("request_id", "user", "api_key", "endpoint", "model", "worker", "price",
              "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
              "cost_usd", "upstream_cost_usd", "source", "estimate_reason",
              "over_cap", "over_hold", "status", "latency_ms", "ttft_ms", "created_at",
              "refund")
    readonly_fields = ("cost_usd", "upstream_cost_usd", "created_at", "refund")

    @admin.display(description="Time (UTC)", ordering="created_at")
    def created(self, obj: UsageRecord) -> Any:
        return when(obj.created_at)

    @admin.display(description="Request", ordering="request_id")
    def request(self, obj: UsageRecord) -> Any:
        return short_id(obj.request_id)

    @admin.display(description="User", ordering="user__email")
    def user_short(self, obj: UsageRecord) -> Any:
        return short_text(obj.user.email)

    @admin.display(description="Model", ordering="model")
    def model_short(self, obj: UsageRecord) -> Any:
        return short_text(obj.model, keep=24)

    @admin.display(description="Tokens in / out")
    def tokens(self, obj: UsageRecord) -> str:
        return f"{obj.prompt_tokens:,} / {obj.completion_tokens:,}"

    @admin.display(description="Charged (USD)", ordering="cost_micros")
    def cost_usd(self, obj: UsageRecord) -> Any:
        return usd_cell(obj.cost_micros)

    @admin.display(description="Upstream cost (USD)", ordering="upstream_cost_micros")
    def upstream_cost_usd(self, obj: UsageRecord) -> Any:
        return usd_cell(obj.upstream_cost_micros)  # a dash when unknown, never $0


@admin.register(RefusedRequests)
class RefusedRequestsAdmin(IndexedSearchMixin, KeysetAdminMixin, ReadOnlyAdmin):
    """Requests refused for money or a limit, per key and minute: a user asking why their
    integration stopped is answered here."""

    list_display = ("minute_utc", "user_short", "api_key", "endpoint", "model", "status",
                    "reason", "count", "message_short")
    list_filter = ("status", "reason", "endpoint", "minute")
    list_select_related = ("user", "api_key")
    indexed_search = IndexedSearch(api_key="api_key_id", user="user_id", model="model")
    keyset_order = ("minute", "id")

    @admin.display(description="Minute (UTC)", ordering="minute")
    def minute_utc(self, obj: RefusedRequests) -> Any:
        return when(obj.minute)

    @admin.display(description="User", ordering="user__email")
    def user_short(self, obj: RefusedRequests) -> Any:
        return short_text(obj.user.email)

    @admin.display(description="Last message")
    def message_short(self, obj: RefusedRequests) -> Any:
        return short_text(obj.message, keep=60)
