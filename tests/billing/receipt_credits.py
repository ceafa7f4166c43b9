"""Credits of each kind a receipt is made for, and a charge, made the way production makes
them (the Stripe webhook, a voucher redemption, a staff credit, a settled request)."""

from __future__ import annotations

import itertools

from django.db import transaction
from django.test import Client

from accounts.models import User
from audit.actors import Actor
from billing.models import CheckoutTopUp, LedgerEntry, Wallet
from billing.services import wallet_credit
from billing.services.ledger import ledger_post
from billing.services.vouchers import voucher_batch_create, voucher_redeem
from tests.billing.stripe_fakes import deliver, session_event

_serial = itertools.count(1)


def card_topup_paid(user: User, *, amount_micros: int = 20_000_000,
                    payment_intent: str | None = None) -> LedgerEntry:
    """A Checkout top-up that Stripe's (signed, offline) webhook reports paid. Needs the
    ``stripe_keys`` fixture."""
    n = next(_serial)
    topup = CheckoutTopUp.objects.create(user=user, amount_micros=amount_micros,
                                         currency="usd", status=CheckoutTopUp.Status.OPEN,
                                         session_id=f"cs_test_receipt_{n}")
    intent = payment_intent or f"pi_test_receipt_{n}"
    response = deliver(Client(), session_event(topup, event_id=f"evt_receipt_{n}",
                                               payment_intent=intent))
    assert response.status_code == 200, response.content
    topup.refresh_from_db()
    return topup.credited_entry


def voucher_redeemed(user: User, *, amount_micros: int = 5_000_000) -> tuple[LedgerEntry, str]:
    """The entry and the code it was redeemed with."""
    [code] = voucher_batch_create(amount_micros=amount_micros, count=1, memo="receipts")
    return voucher_redeem(user=user, code=code), code


def staff_credited(user: User, staff: User, *, amount_micros: int = 7_500_000,
                   kind: str = LedgerEntry.Kind.ADJUSTMENT) -> LedgerEntry:
    return wallet_credit(user=user, amount_micros=amount_micros, kind=kind,
                         idempotency_key=f"admin:receipt-test-{next(_serial)}",
                         memo="goodwill credit", created_by=staff,
                         actor=Actor(user=staff, label=staff.email))


def charged(user: User, *, amount_micros: int = 1_000) -> LedgerEntry:
    """A request's charge, posted as the settle path posts it."""
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(user=user)
        return ledger_post(wallet=wallet, kind=LedgerEntry.Kind.CHARGE,
                           amount_micros=-amount_micros,
                           idempotency_key=f"charge:receipt-test-{next(_serial)}",
                           memo="test-model request")
