"""Charging a wallet's saved card when its balance runs low: claim, call Stripe, settle.

1. **Claim**, one short transaction: one conditional UPDATE of the wallet's auto top-up row
   adds the amount to the month's total only while it is enabled, has nothing in flight,
   the posted balance is below the threshold and the total stays within the ceiling; then,
   under that row's lock, the charge row is inserted and named the in-flight charge. Two
   workers (or beat runs) racing: the second UPDATE waits for the first's lock, PostgreSQL
   re-checks its WHERE against the row the first committed, and it updates nothing. A
   partial UNIQUE index on in-flight charges refuses a second one besides, whoever writes.
   The claim commits before Stripe is called.
2. **Charge**, no transaction open: an off-session PaymentIntent confirmed at once, whose
   Stripe idempotency key is derived from the charge id. A process that dies before recording
   the answer leaves the charge claimed; the reconciler sends the same request again and
   Stripe answers with the first intent instead of charging twice.
3. **Settle**, in the webhook's transaction: ``payment_intent.succeeded`` credits the wallet
   once (the event id, the charge row locked and credited once, the ledger's UNIQUE key
   ``stripe:<intent id>``, as for card top-ups) and frees the in-flight slot; a decline or a
   bank asking for authentication switches auto top-up off with the reason, gives the amount
   back to the month, and queues an email to the wallet's contacts.

Locks are taken in one order everywhere: the auto top-up row, the charge, then the wallet.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from billing.models import AutoTopUp, AutoTopUpCharge, LedgerEntry, Wallet
from billing.money import cents_to_micros, micros_to_cents
from billing.selectors.auto_topup import month_of
from billing.services.auto_topup.notices import auto_topup_disabled_queue
from billing.services.ledger import ledger_post
from billing.services.stripe_client import stripe_client

logger = logging.getLogger(__name__)

Payload = dict[str, Any]

# Stripe's states of an intent that will not be paid without the cardholder: a decline
# (requires_payment_method), a bank asking them to authenticate (requires_action), or one
# canceled. Auto top-up charges while they are away, so each is the end of this charge.
_UNPAID_STATES = {"requires_payment_method", "requires_action", "canceled"}


class Source(StrEnum):
    """Who tells us about an intent. Only Stripe's webhook and the reconciler's own read of
    the intent credit money; the answer to the create call only records the intent."""

    WEBHOOK = "webhook"
    CREATE = "create"
    RECONCILE = "reconcile"


class IntentOutcome(StrEnum):
    CREDITED = "credited"
    ALREADY_CREDITED = "already_credited"
    FAILED = "charge_failed"  # the charge failed: auto top-up is off, the owner emailed
    ALREADY_SETTLED = "already_settled"  # a late or repeated word on a charge decided
    RECORDED = "recorded"  # Stripe has it and has not finished
    NOT_OURS = "ignored"


def idempotency_key_of(charge: AutoTopUpCharge) -> str:
    return f"binom-auto-topup-{charge.pk}"


def auto_topup_claim(*, wallet_id: int, now: datetime | None = None
                     ) -> AutoTopUpCharge | None:
    """Take the right to charge the wallet's card once, or None when it may not be taken."""
    this_month = month_of(now or timezone.now())
    current = AutoTopUp.objects.filter(wallet_id=wallet_id).values(
        "pk", "amount_micros", "stripe_customer_id", "payment_method_id").first()
    if current is None or not current["payment_method_id"]:
        return None
    spent = Case(When(month=this_month, then=F("month_total_micros")), default=Value(0))
    # Correlated, not a join: a join would make Django wrap the UPDATE's conditions in a
    # "pk IN (subquery)", which PostgreSQL does not re-check against a row another claim just
    # committed, and two claims would both pass.
    below_threshold = Exists(Wallet.objects.filter(
        pk=OuterRef("wallet_id"), posted_micros__lt=OuterRef("threshold_micros")))
    try:
        with transaction.atomic():
            # The claim. A second claimer's UPDATE waits for this row's lock, then finds
            # in_flight_charge set (or the month's total grown) and updates nothing.
            claimed = AutoTopUp.objects.filter(
                below_threshold,
                LessThanOrEqual(spent + F("amount_micros"), F("monthly_ceiling_micros")),
                pk=current["pk"], enabled=True, in_flight_charge__isnull=True,
                # The charge copies these: if the owner changed them meanwhile, claim later.
                amount_micros=current["amount_micros"],
                stripe_customer_id=current["stripe_customer_id"],
                payment_method_id=current["payment_method_id"],
            ).update(month=this_month, month_total_micros=spent + F("amount_micros"),
                     updated_at=timezone.now())
            if not claimed:
                return None
            # Had this UPDATE waited for the lock of a transaction that credited the wallet
            # (the late success of an earlier charge), PostgreSQL re-checked the row but ran
            # the balance subquery on the snapshot from before that credit. This statement
            # sees it, and the row is ours until commit.
            if not AutoTopUp.objects.filter(
                    pk=current["pk"], wallet__posted_micros__lt=F("threshold_micros")).exists():
                transaction.set_rollback(True)
                return None
            charge = AutoTopUpCharge.objects.create(
                wallet_id=wallet_id, amount_micros=current["amount_micros"], month=this_month,
                stripe_customer_id=current["stripe_customer_id"],
                payment_method_id=current["payment_method_id"])
            # Still inside the claim's row lock: no one saw the slot free in between.
            AutoTopUp.objects.filter(pk=current["pk"]).update(in_flight_charge=charge)
    except IntegrityError:
        # The partial UNIQUE index: a charge of this wallet is in flight that the row did
        # not name (a writer outside this function). Never two, whoever writes.
        logger.error("wallet %d: a charge is in flight already; not claimed", wallet_id)
        return None
    return charge


def auto_topup_start(*, wallet_id: int, now: datetime | None = None
                     ) -> AutoTopUpCharge | None:
    """Claim and, if claimed, charge. Returns the charge started, or None."""
    charge = auto_topup_claim(wallet_id=wallet_id, now=now)
    if charge is not None:
        auto_topup_charge_send(charge=charge)
        charge.refresh_from_db()
    return charge


def auto_topup_charge_send(*, charge: AutoTopUpCharge) -> None:
    """Ask Stripe to charge a claimed charge, and record what it answers.

    Called with no transaction open (a slow Stripe must not hold a connection or a lock),
    for a new claim and again by the reconciler for one whose answer was never recorded: the
    same request with the same idempotency key, so Stripe charges once.
    """
    reference = {"wallet_id": str(charge.wallet_id), "auto_topup_charge_id": str(charge.pk)}
    params: Payload = {
        "amount": micros_to_cents(charge.amount_micros), "currency": "usd",
        "customer": charge.stripe_customer_id, "payment_method": charge.payment_method_id,
        # Cards only: other methods may need a redirect, impossible with nobody present.
        "payment_method_types": ["card"], "off_session": True, "confirm": True,
        "description": "Binom Router balance auto top-up", "metadata": reference,
    }
    try:
        intent = stripe_client().v1.payment_intents.create(
            params=params, options={"idempotency_key": idempotency_key_of(charge)})
    except stripe.CardError as exc:
        # A decline, or the bank wanting the cardholder (authentication_required). Stripe
        # sends the failed intent in the error; settle the charge from it.
        error = (exc.json_body or {}).get("error") or {}
        failed = dict(error.get("payment_intent") or {})
        failed["status"] = failed.get("status") or "requires_payment_method"
        failed["last_payment_error"] = failed.get("last_payment_error") or error
        failed["metadata"] = reference
        auto_topup_intent_apply(intent=failed, source=Source.CREATE)
    except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
        # The card or customer was removed at Stripe, or similar: asking again will not help.
        auto_topup_charge_fail(charge_id=charge.pk,
                               reason=f"Stripe refused the charge: {exc.user_message}")
    except stripe.StripeError as exc:
        # No answer (timeout, 5xx, rate limit) after the SDK's retries: Stripe may or may not
        # have charged. The charge stays claimed; the reconciler asks again, same key.
        logger.warning("auto top-up charge %d: no answer from Stripe, asking again later: %s",
                       charge.pk, exc)
    else:
        auto_topup_intent_apply(intent=intent.to_dict(), source=Source.CREATE)


def auto_topup_intent_apply(*, intent: Payload, source: Source) -> IntentOutcome:
    """Bring our charge in line with what Stripe says of its payment intent: the webhook's
    payment_intent events, the answer to our create call and the reconciler's reads all come
    here. One transaction (the caller's, for the webhook, so the event row commits with it)."""
    with transaction.atomic():
        located = _charge_locked(intent)
        if located is None:
            return IntentOutcome.NOT_OURS
        row, charge = located
        intent_id = intent.get("id") or ""
        if intent_id and not charge.payment_intent_id:
            charge.payment_intent_id = intent_id
            charge.save(update_fields=["payment_intent_id", "updated_at"])
        status = intent.get("status")
        if status == "succeeded" and source != Source.CREATE:
            return _credit(row, charge, intent)
        if status in _UNPAID_STATES:
            return _fail(row, charge, _reason_of(intent))
        if charge.status not in AutoTopUpCharge.IN_FLIGHT:
            return IntentOutcome.ALREADY_SETTLED
        if charge.status == AutoTopUpCharge.Status.CLAIMED:
            charge.status = AutoTopUpCharge.Status.PROCESSING
            charge.save(update_fields=["status", "updated_at"])
        return IntentOutcome.RECORDED


def auto_topup_charge_fail(*, charge_id: int, reason: str) -> IntentOutcome:
    """End a charge Stripe will not make (or never answered about): off, and the owner told."""
    with transaction.atomic():
        wallet_id = AutoTopUpCharge.objects.filter(pk=charge_id).values_list(
            "wallet_id", flat=True).first()
        if wallet_id is None:
            return IntentOutcome.NOT_OURS
        row = AutoTopUp.objects.select_for_update().get(wallet_id=wallet_id)
        charge = AutoTopUpCharge.objects.select_for_update().get(pk=charge_id)
        return _fail(row, charge, reason)


def _charge_locked(intent: Payload) -> tuple[AutoTopUp, AutoTopUpCharge] | None:
    """Our charge for an intent, and its auto top-up row, both locked; None if not ours.
    Found by the charge id in the metadata we wrote (even before the intent id was recorded:
    the webhook can beat the create call's answer), else by the intent id."""
    metadata = intent.get("metadata") or {}
    charge_ref = str(metadata.get("auto_topup_charge_id", ""))
    if charge_ref.isdigit():
        found = AutoTopUpCharge.objects.filter(pk=int(charge_ref))
    elif intent.get("id"):
        found = AutoTopUpCharge.objects.filter(payment_intent_id=intent["id"])
    else:
        return None
    ids = found.values_list("pk", "wallet_id").first()
    if ids is None or str(metadata.get("wallet_id", ids[1])) != str(ids[1]):
        logger.warning("Stripe intent %s names no auto top-up charge of ours (metadata %r)",
                       intent.get("id"), metadata)
        return None
    row = AutoTopUp.objects.select_for_update().get(wallet_id=ids[1])
    charge = AutoTopUpCharge.objects.select_for_update().get(pk=ids[0])
    if intent.get("id") and charge.payment_intent_id not in ("", intent["id"]):
        logger.error("auto top-up charge %d is intent %s, not %s; ignored", charge.pk,
                     charge.payment_intent_id, intent["id"])
        return None
    return row, charge


def _credit(row: AutoTopUp, charge: AutoTopUpCharge, intent: Payload) -> IntentOutcome:
    if charge.credited_entry_id is not None:
        return IntentOutcome.ALREADY_CREDITED
    amount_cents = intent.get("amount_received")
    if str(intent.get("currency")).lower() != "usd" or not isinstance(amount_cents, int) \
            or amount_cents <= 0:
        logger.error("auto top-up charge %d: intent %s reports %r %r; not credited, check it "
                     "in Stripe's dashboard", charge.pk, intent.get("id"), amount_cents,
                     intent.get("currency"))
        return IntentOutcome.NOT_OURS
    wallet = Wallet.objects.select_for_update().get(pk=charge.wallet_id)
    entry = ledger_post(wallet=wallet, kind=LedgerEntry.Kind.TOPUP,
                        amount_micros=cents_to_micros(amount_cents),
                        idempotency_key=f"stripe:{intent['id']}",
                        memo=f"Auto top-up {charge.pk} (Stripe)")
    if charge.status == AutoTopUpCharge.Status.FAILED and row.month == charge.month:
        # It had been given back to the month when it looked failed; the money came after all.
        row.month_total_micros += charge.amount_micros
    charge.status = AutoTopUpCharge.Status.SUCCEEDED
    charge.credited_entry = entry
    charge.save(update_fields=["status", "credited_entry", "updated_at"])
    if row.in_flight_charge_id == charge.pk:
        row.in_flight_charge = None
    row.save(update_fields=["in_flight_charge", "month_total_micros", "updated_at"])
    return IntentOutcome.CREDITED


def _fail(row: AutoTopUp, charge: AutoTopUpCharge, reason: str) -> IntentOutcome:
    if charge.status not in AutoTopUpCharge.IN_FLIGHT:
        return IntentOutcome.ALREADY_SETTLED
    now = timezone.now()
    charge.status = AutoTopUpCharge.Status.FAILED
    charge.failure_reason = reason[:500]
    charge.save(update_fields=["status", "failure_reason", "updated_at"])
    if row.in_flight_charge_id == charge.pk:
        row.in_flight_charge = None
    if row.month == charge.month:
        row.month_total_micros -= charge.amount_micros
    # Off until the owner looks: charging the same card again would fail again, or worse,
    # keep asking their bank for payments they are not there to confirm.
    row.enabled = False
    row.disabled_reason = reason[:500]
    row.disabled_at = now
    row.save()
    auto_topup_disabled_queue(wallet_id=row.wallet_id, reason=reason,
                              amount_micros=charge.amount_micros)
    return IntentOutcome.FAILED


def _reason_of(intent: Payload) -> str:
    error = intent.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code") or ""
    if intent.get("status") == "requires_action" or code == "authentication_required":
        return ("The card's bank asked the cardholder to confirm the payment, which cannot be "
                "done while they are away (authentication_required). Pay once by card with "
                "the card, or save another card, then turn auto top-up on again.")
    if intent.get("status") == "canceled":
        return "The payment was canceled at Stripe."
    message = error.get("message") or "The card could not be charged."
    return f"The card was declined: {message}" + (f" ({code})" if code else "")
