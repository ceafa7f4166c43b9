"""Auto top-up: a wallet's saved card charged off-session when its balance runs low.

``settings`` holds what the owner sets (amounts, the card), ``charges`` the claim, the
Stripe call and the settlement of one charge, ``runs`` the periodic search and
reconciliation, ``notices`` the email sent when it switches itself off.
"""

from billing.services.auto_topup.charges import (
    IntentOutcome,
    Source,
    auto_topup_charge_fail,
    auto_topup_charge_send,
    auto_topup_claim,
    auto_topup_intent_apply,
    auto_topup_start,
)
from billing.services.auto_topup.runs import (
    RunResult,
    auto_topups_nudge,
    auto_topups_reconcile,
    auto_topups_run,
    auto_topups_start_due,
)
from billing.services.auto_topup.settings import (
    CARD_PURPOSE,
    auto_topup_card_checkout_complete,
    auto_topup_card_checkout_create,
    auto_topup_card_save,
    auto_topup_cards_describe,
    auto_topup_configure,
    auto_topup_customer_ensure,
    auto_topup_row,
)

__all__ = [
    "CARD_PURPOSE",
    "IntentOutcome",
    "RunResult",
    "Source",
    "auto_topup_card_checkout_complete",
    "auto_topup_card_checkout_create",
    "auto_topup_card_save",
    "auto_topup_cards_describe",
    "auto_topup_charge_fail",
    "auto_topup_charge_send",
    "auto_topup_claim",
    "auto_topup_configure",
    "auto_topup_customer_ensure",
    "auto_topup_intent_apply",
    "auto_topup_row",
    "auto_topup_start",
    "auto_topups_nudge",
    "auto_topups_reconcile",
    "auto_topups_run",
    "auto_topups_start_due",
]
