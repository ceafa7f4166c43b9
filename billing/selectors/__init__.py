"""Reads of billing state, by sub-domain; import from here."""

from billing.selectors.alerts import balance_alert_of
from billing.selectors.auto_topup import (
    AutoTopUpState,
    auto_topup_charges_of,
    auto_topup_state_of,
    auto_topups_due,
    wallet_contacts,
)
from billing.selectors.budgets import SpendCaps, SpendingRoom, key_spend_caps, spending_room_of
from billing.selectors.refusals import refused_count_of, refused_requests_of
from billing.selectors.topups import stripe_topups_enabled, topup_of, topups_of
from billing.selectors.usage import (
    USAGE_FLAGGED,
    DailyUsage,
    ModelUsage,
    SpendSummary,
    UsageFilters,
    WorkerUsageFlags,
    api_key_spend_of,
    usage_by_model,
    usage_daily,
    usage_flags_by_worker,
    usage_records_of,
    usage_spend_summary,
)
from billing.selectors.wallets import (
    Balance,
    WalletAudit,
    ledger_entries_of,
    price_current,
    prices_current,
    wallet_audit,
    wallet_audits_failing,
    wallet_balance,
    wallet_balance_of,
    wallets_with_sums,
)

__all__ = [
    "USAGE_FLAGGED",
    "AutoTopUpState",
    "Balance",
    "DailyUsage",
    "ModelUsage",
    "SpendCaps",
    "SpendSummary",
    "SpendingRoom",
    "UsageFilters",
    "WalletAudit",
    "WorkerUsageFlags",
    "api_key_spend_of",
    "auto_topup_charges_of",
    "auto_topup_state_of",
    "auto_topups_due",
    "balance_alert_of",
    "key_spend_caps",
    "ledger_entries_of",
    "price_current",
    "prices_current",
    "refused_count_of",
    "refused_requests_of",
    "spending_room_of",
    "stripe_topups_enabled",
    "topup_of",
    "topups_of",
    "usage_by_model",
    "usage_daily",
    "usage_flags_by_worker",
    "usage_records_of",
    "usage_spend_summary",
    "wallet_audit",
    "wallet_audits_failing",
    "wallet_balance",
    "wallet_balance_of",
    "wallet_contacts",
    "wallets_with_sums",
]
