from billing.models.alerts import BalanceAlert, OutboxMessage
from billing.models.auto_topup import AutoTopUp, AutoTopUpCharge
from billing.models.budgets import KeyBudget, MemberBudget
from billing.models.holds import Hold
from billing.models.ledger import LedgerEntry
from billing.models.ledger_days import LedgerDay, LedgerDayMark
from billing.models.prices import ModelKind, ModelPrice
from billing.models.refusals import RefusedRequests
from billing.models.rollups import UsageOwnerRollup, UsageRollup, UsageRollupMark
from billing.models.topups import CheckoutTopUp, StripeEvent, Voucher
from billing.models.usage import BAD_USAGE_REASONS, UsageRecord
from billing.models.wallets import Wallet

__all__ = [
    "BAD_USAGE_REASONS",
    "AutoTopUp",
    "AutoTopUpCharge",
    "BalanceAlert",
    "CheckoutTopUp",
    "Hold",
    "KeyBudget",
    "LedgerDay",
    "LedgerDayMark",
    "LedgerEntry",
    "MemberBudget",
    "ModelKind",
    "ModelPrice",
    "OutboxMessage",
    "RefusedRequests",
    "StripeEvent",
    "UsageOwnerRollup",
    "UsageRecord",
    "UsageRollup",
    "UsageRollupMark",
    "Voucher",
    "Wallet",
]
