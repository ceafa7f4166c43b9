"""Refunding a card top-up: Stripe sends the money back to the card, the wallet gives back
what it can.

The wallet is debited by the refunded amount only as far as its available balance goes
(posted minus what requests in flight hold; never below zero): the user may have spent the
top-up already. What could not be taken back is recorded on the refund as unrecovered. The
wallet is the one the top-up credited (``CheckoutTopUp.wallet_lookup``): an organization's
for a member's payment into it, never the payer's own.

One refund debits once, however it is learnt of: the admin's call to Stripe, then Stripe's
``refund.*`` and ``charge.refunded`` events (each delivered possibly more than once, in any
order, at the same time). The refund row is locked while it is applied and its debit is set
once (``debited_at``, ``debit_entry``), and the ledger's UNIQUE key ``card_refund:<row id>``
stands behind both.

Lock order: the top-up row, then the refund row, then the wallet row.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_record
from billing.errors import BillingError, PaymentProviderError
from billing.models import CheckoutTopUp, LedgerEntry, Wallet
from billing.models.topups import TopUpRefund
from billing.money import MICROS_PER_CENT, cents_to_micros, format_usd, micros_to_cents
from billing.services.ledger import ledger_post
from billing.services.stripe_client import stripe_client

logger = logging.getLogger(__name__)

Payload = dict[str, Any]
# Refunds that do not (or no longer) send money back do not count against the top-up.
_LIVE = (TopUpRefund.Status.CREATING, TopUpRefund.Status.PENDING, TopUpRefund.Status.SUCCEEDED)
_STRIPE_STATUS = {
    "pending": TopUpRefund.Status.PENDING,
    "requires_action": TopUpRefund.Status.PENDING,
    "succeeded": TopUpRefund.Status.SUCCEEDED,
    "failed": TopUpRefund.Status.FAILED,
    "canceled": TopUpRefund.Status.CANCELED,
}


class TopUpRefundRefused(BillingError):
    """The top-up cannot be refunded this way (not paid, too much); the message says why."""


def topup_refundable_micros(*, topup: CheckoutTopUp) -> int:
    """What is left to refund of a credited top-up: its credit less its live refunds."""
    if topup.credited_entry_id is None:
        return 0
    credited = LedgerEntry.objects.get(pk=topup.credited_entry_id).amount_micros
    refunded = (TopUpRefund.objects.filter(topup_id=topup.pk, status__in=_LIVE)
                .aggregate(s=Sum("amount_micros"))["s"]) or 0
    return credited - refunded


def topup_refund(*, topup: CheckoutTopUp, amount_micros: int, reason: str,
                 operation_key: str, actor: Actor) -> TopUpRefund:
    """Refund ``amount_micros`` of a paid card top-up to the card, and debit the wallet.

    ``operation_key`` identifies the staff member's one submission: submitted again (a double
    click), it finds the same row and Stripe the same idempotency key, so nothing is
    refunded twice. No transaction is open while Stripe answers.
    """
    reason = reason.strip()
    if not reason:
        raise TopUpRefundRefused("A refund needs a reason.")
    if amount_micros <= 0 or amount_micros % MICROS_PER_CENT:
        raise TopUpRefundRefused("A card refund is a positive amount in whole cents.")
    refund = _refund_row(topup=topup, amount_micros=amount_micros, reason=reason,
                         operation_key=operation_key, actor=actor)
    if refund.status != TopUpRefund.Status.CREATING:
        return refund  # this submission already reached Stripe
    try:
        answer = stripe_client().v1.refunds.create(
            params={"payment_intent": refund.topup.payment_intent_id,
                    "amount": micros_to_cents(refund.amount_micros),
                    "reason": "requested_by_customer",
                    "metadata": {"topup_id": str(refund.topup_id),
                                 "topup_refund_id": str(refund.pk)}},
            options={"idempotency_key": f"binom-refund-{refund.pk}"})
    except stripe.StripeError as exc:
        # Should Stripe have made the refund after all (a lost answer), its webhook finds
        # this row by the metadata and applies it then.
        logger.warning("top-up refund %d: Stripe refused it: %s", refund.pk, exc)
        TopUpRefund.objects.filter(pk=refund.pk, status=TopUpRefund.Status.CREATING).update(
            status=TopUpRefund.Status.FAILED, updated_at=timezone.now())
        raise PaymentProviderError(
            f"Stripe did not make the refund: {exc.user_message or exc}. Nothing was "
            "debited.") from exc
    with transaction.atomic():
        _lock_topup(refund.topup_id)
        locked = TopUpRefund.objects.select_for_update().select_related("topup").get(
            pk=refund.pk)
        _apply(locked, stripe_refund_id=answer.id, stripe_status=answer.status)
        return locked


def _refund_row(*, topup: CheckoutTopUp, amount_micros: int, reason: str,
                operation_key: str, actor: Actor) -> TopUpRefund:
    with transaction.atomic():
        topup = CheckoutTopUp.objects.select_for_update().get(pk=topup.pk)
        # After the top-up's lock: a concurrent submission of the same form has committed
        # its row by now, and is found here instead of inserting a second.
        existing = (TopUpRefund.objects.select_related("topup")
                    .filter(idempotency_key=operation_key).first())
        if existing is not None:
            return existing
        if topup.status != CheckoutTopUp.Status.PAID or not topup.payment_intent_id:
            raise TopUpRefundRefused("Only a paid card top-up can be refunded.")
        left = topup_refundable_micros(topup=topup)
        if amount_micros > left:
            raise TopUpRefundRefused(f"At most {format_usd(left)} USD of this top-up is left "
                                     "to refund.")
        staff = actor.user
        refund = TopUpRefund.objects.create(
            topup=topup, amount_micros=amount_micros, reason=reason[:500],
            idempotency_key=operation_key, created_by=staff if staff is not None else None)
        audit_record(actor=actor, action="topup.refund", obj=refund, reason=reason,
                     before=None, after={"topup": topup.pk, "amount_micros": amount_micros})
        return refund


def refund_event_apply(*, refund: Payload) -> bool | None:
    """Apply a Stripe Refund object from a webhook, inside the webhook's transaction.

    True if this event moved money or recorded a refund not known before, False if it was
    already applied, None if the refund is not of one of our top-ups.
    """
    refund_id = refund.get("id")
    if not isinstance(refund_id, str) or not refund_id:
        return None
    if str(refund.get("currency", "usd")).lower() != "usd":
        logger.error("Stripe refund %s is in %r; not applied", refund_id, refund.get("currency"))
        return None
    _lock_topup_of(refund_id, refund.get("metadata") or {}, refund.get("payment_intent"))
    row = _known_refund(refund_id, refund.get("metadata") or {})
    if row is None:
        row = _refund_made_at_stripe(refund)
        if row is None:
            return None
    return _apply(row, stripe_refund_id=refund_id, stripe_status=refund.get("status"))


def _lock_topup(topup_id: int) -> None:
    CheckoutTopUp.objects.select_for_update().filter(pk=topup_id).first()


def _lock_topup_of(refund_id: str, metadata: Payload, intent: Any) -> None:
    """Lock the top-up a refund event is about before anything else.

    Every path that changes a top-up's refunds (the admin's, and each webhook event: Stripe
    sends refund.created, refund.updated, charge.refunded... at once) takes the top-up's row
    first, then the refund's, then the wallet's: in one order, so concurrent deliveries queue
    instead of deadlocking (they did: one held the top-up and waited for a refund row that
    another, holding it through a join, had locked before reaching for the top-up)."""
    rows = TopUpRefund.objects.values_list("topup_id", flat=True)
    topup_id = rows.filter(stripe_refund_id=refund_id).first()
    row_id = str(metadata.get("topup_refund_id", ""))
    if topup_id is None and row_id.isdigit():
        topup_id = rows.filter(pk=int(row_id)).first()
    if topup_id is not None:
        _lock_topup(topup_id)
    elif isinstance(intent, str) and intent:
        CheckoutTopUp.objects.select_for_update().filter(payment_intent_id=intent).first()


def _known_refund(refund_id: str, metadata: Payload) -> TopUpRefund | None:
    rows = TopUpRefund.objects.select_for_update().select_related("topup")
    row = rows.filter(stripe_refund_id=refund_id).first()
    row_id = str(metadata.get("topup_refund_id", ""))
    if row is None and row_id.isdigit():
        # Ours, started in the admin; the webhook may come before our call returned.
        row = rows.filter(pk=int(row_id), stripe_refund_id__in=["", refund_id]).first()
    return row


def _refund_made_at_stripe(refund: Payload) -> TopUpRefund | None:
    """A refund made outside the admin (Stripe's dashboard): recorded, then applied."""
    amount_cents = refund.get("amount")
    intent = refund.get("payment_intent")
    if not isinstance(amount_cents, int) or amount_cents <= 0 or not isinstance(intent, str):
        return None
    topup = CheckoutTopUp.objects.select_for_update().filter(payment_intent_id=intent).first()
    if topup is None:
        return None  # a payment on the account that is not a top-up
    key = f"stripe:{refund['id']}"
    try:
        with transaction.atomic():
            TopUpRefund.objects.create(
                topup=topup, amount_micros=cents_to_micros(amount_cents), idempotency_key=key,
                stripe_refund_id=refund["id"], reason="Refunded in Stripe's dashboard")
    except IntegrityError:
        pass  # recorded by a concurrent event of the same refund: applied below, once
    return TopUpRefund.objects.select_for_update().select_related("topup").get(
        idempotency_key=key)


def _apply(row: TopUpRefund, *, stripe_refund_id: str, stripe_status: Any) -> bool:
    """Bring a locked refund row in line with Stripe's view of it. True if money moved."""
    status = _STRIPE_STATUS.get(str(stripe_status))
    if status is None:
        logger.error("top-up refund %d: unknown Stripe status %r", row.pk, stripe_status)
        return False
    row.stripe_refund_id = row.stripe_refund_id or stripe_refund_id
    row.status = status
    moved = False
    # Once Stripe has taken the refund on, the money is leaving: the debit is not put off
    # until it settles, which would leave the user days to spend it again.
    if status in (TopUpRefund.Status.PENDING, TopUpRefund.Status.SUCCEEDED):
        moved = row.debited_at is None and _debit(row)
    elif row.debit_entry_id is not None and row.return_entry_id is None:
        moved = _give_back(row)
    row.save()
    return moved


def _debit(row: TopUpRefund) -> bool:
    wallet = Wallet.objects.select_for_update().get(**row.topup.wallet_lookup)
    debit = max(0, min(row.amount_micros, wallet.available_micros))
    if debit:
        row.debit_entry = ledger_post(
            wallet=wallet, kind=LedgerEntry.Kind.CARD_REFUND, amount_micros=-debit,
            idempotency_key=f"card_refund:{row.pk}", created_by_id=row.created_by_id,
            memo=f"Card refund {row.pk} of top-up {row.topup_id}: {row.reason}")
    row.debited_micros = debit
    row.unrecovered_micros = row.amount_micros - debit
    row.debited_at = timezone.now()
    if row.unrecovered_micros:
        logger.warning("top-up refund %d: %s USD refunded to the card could not be taken "
                       "back from the wallet", row.pk, format_usd(row.unrecovered_micros))
    return True


def _give_back(row: TopUpRefund) -> bool:
    """The refund failed after the wallet was debited: the card got nothing back, so the
    wallet gets its debit back."""
    wallet = Wallet.objects.select_for_update().get(**row.topup.wallet_lookup)
    row.return_entry = ledger_post(
        wallet=wallet, kind=LedgerEntry.Kind.ADJUSTMENT, amount_micros=row.debited_micros,
        idempotency_key=f"card_refund_returned:{row.pk}",
        memo=f"Card refund {row.pk} {row.status} at Stripe: its debit returned")
    return True
