"""What a wallet's owner sets: the threshold, amount and monthly ceiling, and the card.

A card is saved in one of two ways, both through Stripe Checkout so that card details never
reach this server: a Checkout Session in ``setup`` mode, or a card top-up whose payer asked
to keep the card (``setup_future_usage=off_session``). Either way the card belongs to the
wallet's own Stripe customer, created here once per wallet.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import stripe
from django.db import transaction
from django.utils import timezone

from billing.errors import InvalidAutoTopUp, PaymentProviderError, TopUpsDisabled
from billing.models import AutoTopUp, Wallet
from billing.money import MICROS_PER_CENT, micros_to_usd
from billing.selectors.auto_topup import month_of, wallet_contacts
from billing.selectors.topups import stripe_topups_enabled
from billing.services.stripe_client import stripe_client
from billing.topup_limits import TOPUP_MAX_MICROS, TOPUP_MIN_MICROS

logger = logging.getLogger(__name__)

# In the metadata of a setup session and its SetupIntent, so the webhook knows the card is
# one an owner saved for auto top-up, and for which wallet.
CARD_PURPOSE = "auto_topup_card"

Payload = dict[str, Any]


def auto_topup_row(*, wallet: Wallet, now: datetime | None = None) -> AutoTopUp:
    """The wallet's row, made (switched off, with the defaults) the first time it is needed."""
    row, _ = AutoTopUp.objects.get_or_create(wallet=wallet, defaults={
        "threshold_micros": AutoTopUp.DEFAULT_THRESHOLD_MICROS,
        "amount_micros": AutoTopUp.DEFAULT_AMOUNT_MICROS,
        "monthly_ceiling_micros": AutoTopUp.DEFAULT_MONTHLY_CEILING_MICROS,
        "month": month_of(now or timezone.now()),
    })
    return row


def auto_topup_configure(*, wallet: Wallet, enabled: bool, threshold_micros: int,
                         amount_micros: int, monthly_ceiling_micros: int) -> AutoTopUp:
    """Save the owner's settings; turning it on needs a saved card and clears the reason it
    was last switched off. A charge already in flight keeps its own amount."""
    if not stripe_topups_enabled():
        raise TopUpsDisabled
    in_bounds = TOPUP_MIN_MICROS <= amount_micros <= TOPUP_MAX_MICROS
    if not in_bounds or amount_micros % MICROS_PER_CENT:
        raise InvalidAutoTopUp(
            f"An auto top-up is between ${micros_to_usd(TOPUP_MIN_MICROS):,.2f} and "
            f"${micros_to_usd(TOPUP_MAX_MICROS):,.2f}, in whole cents, like any card top-up.")
    if threshold_micros <= 0:
        raise InvalidAutoTopUp("The threshold must be more than zero.")
    if monthly_ceiling_micros < amount_micros:
        raise InvalidAutoTopUp("The monthly ceiling must be at least the amount of one "
                               "top-up.")
    auto_topup_row(wallet=wallet)
    with transaction.atomic():
        row = AutoTopUp.objects.select_for_update().get(wallet=wallet)
        if enabled and not row.payment_method_id:
            raise InvalidAutoTopUp("Save a card first: auto top-up charges a saved card.")
        row.threshold_micros = threshold_micros
        row.amount_micros = amount_micros
        row.monthly_ceiling_micros = monthly_ceiling_micros
        if enabled and not row.enabled:
            row.disabled_reason, row.disabled_at = "", None
        row.enabled = enabled
        row.save()
        return row


def auto_topup_customer_ensure(*, wallet: Wallet) -> str:
    """The wallet's Stripe customer id, created on first use. Stripe is called with no
    transaction open; the idempotency key makes two concurrent first uses one customer."""
    row = auto_topup_row(wallet=wallet)
    if row.stripe_customer_id:
        return row.stripe_customer_id
    params: Payload = {"metadata": {"wallet_id": str(wallet.pk)},
                       "description": f"Binom Router wallet {wallet.pk}"}
    contacts = wallet_contacts(wallet)
    if contacts:
        params["email"] = contacts[0]
    try:
        customer = stripe_client().v1.customers.create(
            params=params, options={"idempotency_key": f"binom-wallet-customer-{wallet.pk}"})
    except stripe.StripeError as exc:
        logger.warning("wallet %d: Stripe refused the customer: %s", wallet.pk, exc)
        raise PaymentProviderError("The payment provider could not be reached; please try "
                                   "again in a moment.") from exc
    # The first customer recorded wins; a second one (a day apart, past Stripe's idempotency
    # window) is left unused rather than orphaning the card already saved on the first.
    AutoTopUp.objects.filter(pk=row.pk, stripe_customer_id="").update(
        stripe_customer_id=customer.id)
    row.refresh_from_db(fields=["stripe_customer_id"])
    return row.stripe_customer_id


def auto_topup_card_checkout_create(*, wallet: Wallet, success_url: str,
                                    cancel_url: str) -> str:
    """A Checkout Session in setup mode: the owner enters a card on Stripe's page, which is
    saved to the wallet's customer for charges made while they are away. Returns its URL."""
    if not stripe_topups_enabled():
        raise TopUpsDisabled
    customer = auto_topup_customer_ensure(wallet=wallet)
    reference = {"wallet_id": str(wallet.pk), "purpose": CARD_PURPOSE}
    params: Payload = {
        "mode": "setup", "customer": customer, "currency": "usd",
        "payment_method_types": ["card"], "metadata": reference,
        "setup_intent_data": {"metadata": reference},
        "success_url": success_url, "cancel_url": cancel_url,
    }
    try:
        # No idempotency key of ours: each visit is a new session, and the SDK gives its
        # own retries one key.
        session = stripe_client().v1.checkout.sessions.create(params=params)
    except stripe.StripeError as exc:
        logger.warning("wallet %d: Stripe refused the setup session: %s", wallet.pk, exc)
        raise PaymentProviderError("The payment provider could not start saving a card; "
                                   "please try again in a moment.") from exc
    return session.url


def auto_topup_card_checkout_complete(*, wallet: Wallet, session_id: str) -> bool:
    """The owner is back from a setup session: read it from Stripe (the redirect itself
    proves nothing; anyone can type its URL) and save its card. The webhook
    (``setup_intent.succeeded``) saves it too; whichever comes first, the card is the same."""
    if not stripe_topups_enabled():
        raise TopUpsDisabled
    try:
        session = stripe_client().v1.checkout.sessions.retrieve(
            session_id, params={"expand": ["setup_intent.payment_method"]}).to_dict()
    except stripe.StripeError as exc:
        logger.warning("wallet %d: could not read setup session %s: %s", wallet.pk,
                       session_id, exc)
        return False
    setup_intent = session.get("setup_intent")
    metadata = session.get("metadata") or {}
    if (session.get("mode") != "setup" or session.get("status") != "complete"
            or metadata.get("wallet_id") != str(wallet.pk) or not isinstance(setup_intent, dict)):
        return False
    return auto_topup_card_save(wallet_id=wallet.pk, customer_id=session.get("customer"),
                                payment_method=setup_intent.get("payment_method"))


def auto_topup_card_save(*, wallet_id: int, customer_id: Any, payment_method: Any) -> bool:
    """Keep a card Stripe set up for off-session use on the wallet's own customer. The
    customer must be the one created for this wallet: a card is never saved to, or charged
    for, another wallet. ``payment_method`` is an id, or the object with its card's brand and
    last digits (otherwise the reconciler fills them in later)."""
    card: Payload = payment_method if isinstance(payment_method, dict) else {}
    method_id = card.get("id") if card else payment_method
    if not isinstance(method_id, str) or not method_id or not isinstance(customer_id, str):
        return False
    rows = AutoTopUp.objects.filter(wallet_id=wallet_id, stripe_customer_id=customer_id)
    if not rows.exists():
        logger.warning("card %s of customer %s is not for wallet %s's customer; not saved",
                       method_id, customer_id, wallet_id)
        return False
    details = card.get("card") or {}
    if not details:
        # A bare id of the card already saved must not blank its known brand and digits.
        rows = rows.exclude(payment_method_id=method_id)
    rows.update(payment_method_id=method_id, card_brand=str(details.get("brand") or "")[:32],
                card_last4=str(details.get("last4") or "")[:4], updated_at=timezone.now())
    return True


def auto_topup_cards_describe(*, limit: int = 20) -> int:
    """Fill in the brand and last digits of saved cards that arrived as bare ids (from a
    webhook). Off the request path, from the periodic task; a card Stripe cannot describe
    now is tried again next time."""
    described = 0
    rows = AutoTopUp.objects.exclude(payment_method_id="").filter(card_last4="")[:limit]
    for wallet_id, method_id in rows.values_list("wallet_id", "payment_method_id"):
        try:
            method = stripe_client().v1.payment_methods.retrieve(method_id).to_dict()
        except stripe.StripeError as exc:
            logger.warning("could not describe card %s: %s", method_id, exc)
            continue
        details = method.get("card") or {}
        described += AutoTopUp.objects.filter(
            wallet_id=wallet_id, payment_method_id=method_id).update(
            card_brand=str(details.get("brand") or "")[:32],
            card_last4=str(details.get("last4") or "")[:4])
    return described
