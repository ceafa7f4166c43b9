"""Card top-ups through Stripe Checkout: create a session, credit it when Stripe says paid.

Stripe may deliver an event more than once, several deliveries at once, and tell of one
payment twice (``checkout.session.completed`` and ``payment_intent.succeeded``). Three
guards make a payment credit once: the processed event's UNIQUE id, our top-up row locked
while it is credited (``credited_entry`` set once), and the ledger's UNIQUE idempotency key
``stripe:<payment intent id>``. The money goes to the wallet the row names, the payer's own
or an organization's they paid for, whoever the payer is.

The same webhook settles auto top-up's off-session charges (``billing.services.auto_topup``:
their intents carry ``auto_topup_charge_id``, and their charge row plays the top-up row's
part) and saves the cards owners keep for it (``setup_intent.succeeded``, or a card top-up
paid with "keep this card").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.models import User
from billing.errors import InvalidAmount, PaymentProviderError, TopUpsDisabled, WebhookRejected
from billing.models import CheckoutTopUp, LedgerEntry, StripeEvent, Wallet
from billing.money import (
    MICROS_PER_CENT,
    cents_to_micros,
    format_usd,
    micros_to_cents,
    micros_to_usd,
)
from billing.selectors.topups import stripe_topups_enabled
from billing.services.auto_topup import (
    CARD_PURPOSE,
    IntentOutcome,
    Source,
    auto_topup_card_save,
    auto_topup_customer_ensure,
    auto_topup_intent_apply,
)
from billing.services.stripe_client import stripe_client
from billing.services.topup_refunds import refund_event_apply
from billing.services.wallets import wallet_credit, wallet_get_or_create
from billing.topup_limits import TOPUP_MAX_MICROS, TOPUP_MIN_MICROS

logger = logging.getLogger(__name__)

# Balances are micro-USD and a cent converts to exactly 10,000 of them, so Stripe charges
# in USD; another currency would need an exchange rate that nothing here keeps.
STRIPE_CURRENCY = "usd"

Payload = dict[str, Any]


class WebhookOutcome(StrEnum):
    CREDITED = "credited"
    ALREADY_CREDITED = "already_credited"  # the other event of the same payment came first
    DUPLICATE = "duplicate"  # this event id was already processed
    NOT_PAID = "not_paid"  # a completed session whose payment is still pending
    UPDATED = "updated"  # a session expired or its delayed payment failed
    IGNORED = "ignored"  # an event type or a payment that is not ours to handle
    REFUND_APPLIED = "refund_applied"  # a card refund debited the wallet, or was recorded
    REFUND_ALREADY_APPLIED = "refund_already_applied"  # e.g. started in the admin, debited
    CHARGE_FAILED = "charge_failed"  # an auto top-up's charge failed: switched off, owner told
    RECORDED = "recorded"  # an auto top-up's charge Stripe has and has not finished
    ALREADY_SETTLED = "already_settled"  # a late word on an auto top-up charge decided before
    CARD_SAVED = "card_saved"  # a card kept for auto top-up


_INTENT_OUTCOMES = {
    IntentOutcome.CREDITED: WebhookOutcome.CREDITED,
    IntentOutcome.ALREADY_CREDITED: WebhookOutcome.ALREADY_CREDITED,
    IntentOutcome.FAILED: WebhookOutcome.CHARGE_FAILED,
    IntentOutcome.ALREADY_SETTLED: WebhookOutcome.ALREADY_SETTLED,
    IntentOutcome.RECORDED: WebhookOutcome.RECORDED,
    IntentOutcome.NOT_OURS: WebhookOutcome.IGNORED,
}


def topup_checkout_create(*, user: User, amount_micros: int, success_url: str,
                          cancel_url: str, save_card: bool = False,
                          wallet: Wallet | None = None) -> str:
    """Start a card top-up of ``amount_micros`` paid by ``user`` into ``wallet`` (an
    organization's: the caller has checked that ``user`` may, through
    ``billing.selectors.receipts.wallet_of_viewer``) or, by default, ``user``'s own wallet;
    returns the Checkout URL to redirect to.

    Not one transaction but three short writes: the row is saved first so its id can go
    into the session's metadata, and no transaction stays open while Stripe answers (a
    slow provider would otherwise hold a database connection and row locks).

    With ``save_card`` (the payer opted in) Stripe keeps the card on the wallet's customer
    for off-session charges, and the webhook saves it for auto top-up.
    """
    if not stripe_topups_enabled():
        raise TopUpsDisabled
    in_bounds = TOPUP_MIN_MICROS <= amount_micros <= TOPUP_MAX_MICROS
    if not in_bounds or amount_micros % MICROS_PER_CENT:
        raise InvalidAmount(f"A top-up is between ${micros_to_usd(TOPUP_MIN_MICROS):,.2f} and "
                            f"${micros_to_usd(TOPUP_MAX_MICROS):,.2f}, in whole cents.")
    if wallet is None:
        wallet = wallet_get_or_create(user=user)
    customer: Payload = {"customer_email": user.email}
    keep_card: dict[str, str] = {}
    if save_card:
        # A card kept for later belongs to the wallet's own Stripe customer (made before the
        # row, so a failure here leaves no top-up stuck in "creating").
        customer = {"customer": auto_topup_customer_ensure(wallet=wallet)}
        keep_card = {"wallet_id": str(wallet.pk), "purpose": CARD_PURPOSE}
    # For an organization: named on Stripe's page and in its dashboard, so the payer and
    # whoever reads the payment later see whose balance it was for.
    organization = ({"organization_id": str(wallet.organization_id)}
                    if wallet.organization_id is not None else {})
    product = "Binom Router balance top-up"
    if wallet.organization_id is not None:
        product = f"{product} for {wallet.organization.name}"[:250]
    topup = CheckoutTopUp.objects.create(user=user, wallet=wallet, amount_micros=amount_micros,
                                         currency=STRIPE_CURRENCY)
    reference = {"user_id": str(user.pk), "topup_id": str(topup.pk), **organization,
                 **keep_card}
    params: Payload = {
        "mode": "payment",
        "line_items": [{
            "quantity": 1,
            "price_data": {
                "currency": topup.currency,
                "unit_amount": micros_to_cents(amount_micros),
                "product_data": {"name": product},
            },
        }],
        "client_reference_id": str(topup.pk),
        **customer,
        "metadata": reference,
        # Copied onto the payment intent, so payment_intent.succeeded finds the row too.
        "payment_intent_data": {"metadata": reference},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    if save_card:
        params["payment_intent_data"]["setup_future_usage"] = "off_session"
    try:
        session = stripe_client().v1.checkout.sessions.create(
            params=params, options={"idempotency_key": f"binom-topup-{topup.pk}"})
    except stripe.StripeError as exc:
        logger.warning("checkout top-up %d: Stripe refused the session: %s", topup.pk, exc)
        CheckoutTopUp.objects.filter(pk=topup.pk).update(status=CheckoutTopUp.Status.FAILED)
        raise PaymentProviderError(
            "The payment provider could not start the payment. Nothing was charged; "
            "please try again in a moment.") from exc
    CheckoutTopUp.objects.filter(pk=topup.pk, status=CheckoutTopUp.Status.CREATING).update(
        session_id=session.id, status=CheckoutTopUp.Status.OPEN)
    return session.url


def stripe_webhook_handle(*, payload: bytes, signature: str) -> WebhookOutcome:
    """Verify one webhook delivery on its raw body and act on it, in one transaction.

    Raises TopUpsDisabled without the Stripe settings and WebhookRejected for anything not
    verifiably from Stripe. Any other error rolls the whole delivery back, event row
    included, so Stripe's retry processes it again.
    """
    if not stripe_topups_enabled():
        raise TopUpsDisabled
    event = _verified_event(payload, signature)
    handler = _HANDLERS.get(event["type"])
    if handler is None:
        # Not recorded: nothing to de-duplicate, and the endpoint may receive many types.
        return WebhookOutcome.IGNORED
    obj = (event.get("data") or {}).get("object") or {}
    with transaction.atomic():
        try:
            # A concurrent delivery of the same event waits here on the UNIQUE index until
            # the first commits, then fails: only one ever runs the handler.
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event["id"], type=event["type"])
        except IntegrityError:
            return WebhookOutcome.DUPLICATE
        return handler(obj, event["type"])


def _verified_event(payload: bytes, signature: str) -> Payload:
    try:
        event = stripe.Webhook.construct_event(payload, signature,
                                               settings.STRIPE_WEBHOOK_SECRET)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"The Stripe-Signature does not verify: {exc.user_message}") from exc
    except ValueError as exc:  # not UTF-8, not JSON, or not a snapshot event
        raise WebhookRejected("The body is not a Stripe event.") from exc
    data = event.to_dict()
    if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        raise WebhookRejected("The body is not a Stripe event: it has no id or type.")
    return data


def _session_paid(session: Payload, event_type: str) -> WebhookOutcome:
    if session.get("payment_status") != "paid":
        # Delayed payment methods (bank debits) complete the session before the money
        # arrives; checkout.session.async_payment_succeeded follows when it does.
        return WebhookOutcome.NOT_PAID
    topup = _topup_locked(session.get("metadata"), session_id=session.get("id"))
    if topup is None:
        return WebhookOutcome.IGNORED
    return _credit(topup, payment_intent_id=session.get("payment_intent"),
                   amount_cents=session.get("amount_total"), currency=session.get("currency"),
                   event_type=event_type, session_id=session.get("id"))


def _payment_intent_succeeded(intent: Payload, event_type: str) -> WebhookOutcome:
    if _is_auto_topup(intent):
        return _INTENT_OUTCOMES[auto_topup_intent_apply(intent=intent, source=Source.WEBHOOK)]
    topup = _topup_locked(intent.get("metadata"), session_id=None)
    if topup is None:
        return WebhookOutcome.IGNORED  # a payment on the account that is not a top-up
    outcome = _credit(topup, payment_intent_id=intent.get("id"),
                      amount_cents=intent.get("amount_received"),
                      currency=intent.get("currency"), event_type=event_type, session_id=None)
    metadata = intent.get("metadata") or {}
    if metadata.get("purpose") == CARD_PURPOSE and str(metadata.get("wallet_id", "")).isdigit():
        # The payer asked to keep the card: only this event names it (the session's does not).
        auto_topup_card_save(wallet_id=int(metadata["wallet_id"]),
                             customer_id=intent.get("customer"),
                             payment_method=intent.get("payment_method"))
    return outcome


def _payment_intent_unpaid(intent: Payload, event_type: str) -> WebhookOutcome:
    """A payment that failed, wants the cardholder, or was canceled. A Checkout top-up's
    session tells of its own end; only auto top-up's charges are settled here."""
    if not _is_auto_topup(intent):
        return WebhookOutcome.IGNORED
    return _INTENT_OUTCOMES[auto_topup_intent_apply(intent=intent, source=Source.WEBHOOK)]


def _setup_intent_succeeded(setup_intent: Payload, event_type: str) -> WebhookOutcome:
    """A card saved on a setup-mode Checkout page for a wallet's auto top-up."""
    metadata = setup_intent.get("metadata") or {}
    wallet_id = str(metadata.get("wallet_id", ""))
    if metadata.get("purpose") != CARD_PURPOSE or not wallet_id.isdigit():
        return WebhookOutcome.IGNORED
    saved = auto_topup_card_save(wallet_id=int(wallet_id),
                                 customer_id=setup_intent.get("customer"),
                                 payment_method=setup_intent.get("payment_method"))
    return WebhookOutcome.CARD_SAVED if saved else WebhookOutcome.IGNORED


def _is_auto_topup(intent: Payload) -> bool:
    return "auto_topup_charge_id" in (intent.get("metadata") or {})


def _session_unpaid_end(session: Payload, event_type: str) -> WebhookOutcome:
    topup = _topup_locked(session.get("metadata"), session_id=session.get("id"))
    if topup is None or topup.credited_entry_id is not None:
        return WebhookOutcome.IGNORED
    topup.status = (CheckoutTopUp.Status.EXPIRED if event_type == "checkout.session.expired"
                    else CheckoutTopUp.Status.FAILED)
    topup.save(update_fields=["status", "updated_at"])
    return WebhookOutcome.UPDATED


def _topup_locked(metadata: Payload | None, *, session_id: str | None) -> CheckoutTopUp | None:
    """Our row for an event, locked until the transaction ends; None if it is not ours.

    The metadata was written by us and arrives signed, but the user id is still checked
    against the row, so a mix-up (two deployments sharing a Stripe account) credits nobody.
    """
    metadata = metadata or {}
    rows = CheckoutTopUp.objects.select_for_update().select_related("user")
    topup_id = str(metadata.get("topup_id", ""))
    if topup_id.isdigit():
        topup = rows.filter(pk=int(topup_id)).first()
    elif session_id:
        topup = rows.filter(session_id=session_id).first()
    else:
        topup = None
    if topup is None or str(metadata.get("user_id", topup.user_id)) != str(topup.user_id):
        logger.warning("Stripe event for an unknown top-up (metadata %r, session %s)",
                       metadata, session_id)
        return None
    return topup


def _credit(topup: CheckoutTopUp, *, payment_intent_id: str | None, amount_cents: Any,
            currency: Any, event_type: str, session_id: str | None) -> WebhookOutcome:
    if topup.credited_entry_id is not None:
        return WebhookOutcome.ALREADY_CREDITED
    if str(currency).lower() != topup.currency or not isinstance(amount_cents, int):
        logger.error("checkout top-up %d: %s reports %r %r; expected %s. Not credited: "
                     "check it in Stripe's dashboard.", topup.pk, event_type, amount_cents,
                     currency, topup.currency)
        return WebhookOutcome.IGNORED
    received_micros = cents_to_micros(amount_cents)
    if received_micros != topup.amount_micros:
        # Stripe's figure is the money that arrived (a discount, a changed amount): the
        # balance follows it, and staff can see the difference in the log and the admin.
        logger.warning("checkout top-up %d: asked for %s USD but Stripe received %s USD; "
                       "crediting what was received", topup.pk, format_usd(topup.amount_micros),
                       format_usd(received_micros))
    if received_micros <= 0:
        return WebhookOutcome.IGNORED
    # A paid session always has a payment intent; the session id only stands in, should
    # Stripe ever omit it, so the row's lock and credited_entry still credit once.
    payment_ref = payment_intent_id or f"session:{session_id}"
    # The wallet the row names (an organization's, when a member paid for it), never
    # assumed to be the payer's; rows from before the column credit the payer's own.
    wallet = topup.wallet
    memo = f"Card top-up {topup.pk} (Stripe)"
    if wallet is not None and wallet.organization_id is not None:
        memo = f"{memo}, paid by {topup.user.email}"
    entry = wallet_credit(
        user=topup.user, wallet=wallet, amount_micros=received_micros,
        kind=LedgerEntry.Kind.TOPUP, idempotency_key=f"stripe:{payment_ref}", memo=memo,
    )
    topup.status = CheckoutTopUp.Status.PAID
    topup.credited_entry = entry
    topup.payment_intent_id = payment_intent_id or topup.payment_intent_id
    topup.save(update_fields=["status", "credited_entry", "payment_intent_id", "updated_at"])
    return WebhookOutcome.CREDITED


def _refund(refund: Payload, event_type: str) -> WebhookOutcome:
    applied = refund_event_apply(refund=refund)
    if applied is None:
        return WebhookOutcome.IGNORED
    return WebhookOutcome.REFUND_APPLIED if applied else WebhookOutcome.REFUND_ALREADY_APPLIED


def _charge_refunded(charge: Payload, event_type: str) -> WebhookOutcome:
    """``charge.refunded`` lists the charge's refunds (``refunds.data``) in API versions that
    still expand it; each is applied as its own ``refund.*`` event would be, so whichever
    event arrives first debits and the other finds it done. Without the list, the refund
    events carry the same news."""
    outcomes = [_refund({**refund, "payment_intent": refund.get("payment_intent")
                         or charge.get("payment_intent")}, event_type)
                for refund in ((charge.get("refunds") or {}).get("data") or [])]
    if WebhookOutcome.REFUND_APPLIED in outcomes:
        return WebhookOutcome.REFUND_APPLIED
    if WebhookOutcome.REFUND_ALREADY_APPLIED in outcomes:
        return WebhookOutcome.REFUND_ALREADY_APPLIED
    return WebhookOutcome.IGNORED


_HANDLERS: dict[str, Callable[[Payload, str], WebhookOutcome]] = {
    "checkout.session.completed": _session_paid,
    "checkout.session.async_payment_succeeded": _session_paid,
    "payment_intent.succeeded": _payment_intent_succeeded,
    "payment_intent.payment_failed": _payment_intent_unpaid,
    "payment_intent.requires_action": _payment_intent_unpaid,
    "payment_intent.canceled": _payment_intent_unpaid,
    "setup_intent.succeeded": _setup_intent_succeeded,
    "checkout.session.expired": _session_unpaid_end,
    "checkout.session.async_payment_failed": _session_unpaid_end,
    "refund.created": _refund,
    "refund.updated": _refund,
    "refund.failed": _refund,
    "charge.refund.updated": _refund,
    "charge.refunded": _charge_refunded,
}
