"""The bounds of every top-up, in one place: services enforce them, forms and pages quote
them."""

from __future__ import annotations

from billing.money import usd_to_micros

# A card top-up: Stripe's fees make tiny payments pointless, and a ceiling catches typos
# (an extra zero) before a card is charged. Whole cents only, since cards charge cents.
TOPUP_MIN_MICROS = usd_to_micros("5")
TOPUP_MAX_MICROS = usd_to_micros("10000")

# A voucher: at least a cent; the same typo ceiling as a card top-up.
VOUCHER_MIN_MICROS = usd_to_micros("0.01")
VOUCHER_MAX_MICROS = usd_to_micros("10000")
# Codes per generated batch: enough for a campaign, small enough for one page and one
# transaction.
VOUCHER_BATCH_MAX = 10_000
