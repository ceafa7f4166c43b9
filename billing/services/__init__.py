"""Every write to money goes through these functions; each is one database transaction."""

from billing.services.budgets import key_budget_set
from billing.services.holds import UsageReport, hold_create, hold_expire, hold_settle, hold_void
from billing.services.prices import price_set
from billing.services.wallets import wallet_credit, wallet_get_or_create

__all__ = [
    "UsageReport",
    "hold_create",
    "hold_expire",
    "hold_settle",
    "hold_void",
    "key_budget_set",
    "price_set",
    "wallet_credit",
    "wallet_get_or_create",
]
