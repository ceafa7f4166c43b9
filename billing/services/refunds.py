"""Refunding one request: a ledger entry that gives its charge back, once.

Once is the database's rule, twice over: the entry's idempotency key ``refund:<request id>``
is UNIQUE, and so is a ``refund`` entry per hold (``billing_ledger_one_refund_per_request``),
whatever key another caller might pick.

A refund gives the money back to the wallet only. The key's spend counters (KeyBudget
``spent_micros`` / ``month_spent_micros``) do not move: they count what the key consumed,
which a goodwill refund does not undo, and winding them back would let a refunded key spend
past its cap. The usage record and the roll-ups also keep the charge; the refund is a
separate entry that statements show on its own line.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from accounts.models import User
from audit.actors import Actor
from audit.services import audit_record
from billing.errors import BillingError
from billing.models import LedgerEntry, UsageRecord, Wallet
from billing.services.ledger import ledger_post


class RefundRefused(BillingError):
    """Nothing can be refunded (nothing was charged, no reason given); the message says why."""


@dataclass(frozen=True)
class UsageRefund:
    entry: LedgerEntry
    created: bool  # False: an earlier call refunded it, and this one wrote nothing


def refund_key(request_id: str) -> str:
    return f"refund:{request_id}"


def usage_refund(*, usage_record: UsageRecord, reason: str, actor: Actor) -> UsageRefund:
    """Credit back what the request was charged, with ``reason`` as the entry's memo.

    Safe to call any number of times, at once: one entry is written, and every call returns
    it. Refused for a request that charged nothing.
    """
    reason = reason.strip()
    if not reason:
        raise RefundRefused("A refund needs a reason.")
    request_id = usage_record.request_id
    charge = LedgerEntry.objects.filter(idempotency_key=f"charge:{request_id}").first()
    if charge is None:
        raise RefundRefused(f"Request {request_id} charged nothing; there is nothing to refund.")
    existing = _refund_of(request_id)
    if existing is not None:
        return UsageRefund(entry=existing, created=False)
    staff = actor.user if isinstance(actor.user, User) else None
    try:
        with transaction.atomic():
            wallet = Wallet.objects.select_for_update().get(pk=charge.wallet_id)
            # Checked again under the wallet's lock: a refund that committed while this
            # call waited is seen here, and this one writes nothing.
            existing = _refund_of(request_id)
            if existing is not None:
                return UsageRefund(entry=existing, created=False)
            posted_before = wallet.posted_micros
            entry = ledger_post(
                wallet=wallet, kind=LedgerEntry.Kind.REFUND, amount_micros=-charge.amount_micros,
                idempotency_key=refund_key(request_id), memo=reason,
                created_by_id=staff.pk if staff else None, hold=charge.hold,
            )
            audit_record(
                actor=actor, action="usage.refund", obj=usage_record, reason=reason,
                before={"posted_micros": posted_before},
                after={"posted_micros": wallet.posted_micros,
                       "amount_micros": entry.amount_micros, "ledger_entry": entry.pk},
            )
            return UsageRefund(entry=entry, created=True)
    except IntegrityError:
        # A concurrent refund of the same request committed first (the UNIQUE key or the
        # one-refund-per-hold index decided); this call returns that entry.
        existing = _refund_of(request_id)
        if existing is None:
            raise
        return UsageRefund(entry=existing, created=False)


def _refund_of(request_id: str) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(
        kind=LedgerEntry.Kind.REFUND, hold_id=request_id).first()

