"""Reads of billing state, by sub-domain; import from here."""

from billing.selectors.wallets import (
    Balance,
    WalletAudit,
    price_current,
    prices_current,
    wallet_audit,
    wallet_audits_failing,
    wallet_balance,
    wallet_balance_of,
    wallets_with_sums,
)

__all__ = [
    "Balance",
    "WalletAudit",
    "price_current",
    "prices_current",
    "wallet_audit",
    "wallet_audits_failing",
    "wallet_balance",
    "wallet_balance_of",
    "wallets_with_sums",
]
