"""The periodic side of auto top-up, off the request path: find wallets below their
threshold and start their charge, and reconcile charges whose outcome we have not heard.

Crossings are found by looking, not by the request path: Celery beat runs
``auto_topups_run`` every ``ROUTER_AUTO_TOPUP_INTERVAL_SECONDS``, and the outbox drainer
nudges the wallets whose low-balance alert the database just queued
(``auto_topups_nudge``). A charge request costs the settlement of a request nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import stripe
from django.utils import timezone

from billing.models import AutoTopUpCharge, OutboxMessage, Wallet
from billing.selectors.auto_topup import auto_topups_due
from billing.services.auto_topup.charges import (
    Source,
    auto_topup_charge_fail,
    auto_topup_charge_send,
    auto_topup_intent_apply,
    auto_topup_start,
)
from billing.services.auto_topup.settings import auto_topup_cards_describe
from billing.services.stripe_client import stripe_client

logger = logging.getLogger(__name__)

# A claim this old whose Stripe answer was never recorded: its process died, or Stripe did
# not answer. Longer than one create call with the SDK's retries can take.
CLAIM_GRACE = timedelta(minutes=2)
# Stripe keeps an idempotency key for 24 hours; sending a claim again after that could
# charge twice, so an older claim is ended instead (its owner is told).
IDEMPOTENCY_WINDOW = timedelta(hours=23)
# Stripe's webhook normally settles a charge within seconds; past this, ask Stripe.
WEBHOOK_GRACE = timedelta(minutes=10)


@dataclass
class RunResult:
    started: list[int] = field(default_factory=list)  # charge ids
    resent: list[int] = field(default_factory=list)
    looked_up: list[int] = field(default_factory=list)
    cards_described: int = 0


def auto_topups_run(*, now: datetime | None = None) -> RunResult:
    now = now or timezone.now()
    result = RunResult(started=auto_topups_start_due(now=now))
    result.resent, result.looked_up = auto_topups_reconcile(now=now)
    result.cards_described = auto_topup_cards_describe()
    return result


def auto_topups_start_due(*, wallet_ids: Iterable[int] | None = None,
                          now: datetime | None = None) -> list[int]:
    """Start a charge for each wallet that is due one (all, or those of ``wallet_ids``)."""
    started = []
    for wallet_id in auto_topups_due(wallet_ids=wallet_ids):
        charge = auto_topup_start(wallet_id=wallet_id, now=now)
        if charge is not None:
            started.append(charge.pk)
    return started


def auto_topups_nudge(*, message_ids: Iterable[int]) -> list[int]:
    """The outbox drainer just handled these messages: a low-balance alert among them is the
    database having seen a wallet cross its alert threshold, so look at that wallet's auto
    top-up now rather than at the next periodic run."""
    user_ids = OutboxMessage.objects.filter(pk__in=list(message_ids), kind="low_balance"
                                            ).values_list("user_id", flat=True)
    wallet_ids = list(Wallet.objects.filter(user_id__in=list(user_ids))
                      .values_list("pk", flat=True))
    return auto_topups_start_due(wallet_ids=wallet_ids) if wallet_ids else []


def auto_topups_reconcile(*, now: datetime) -> tuple[list[int], list[int]]:
    """Charges whose outcome we missed: claimed ones are sent again with their idempotency
    key (or ended, past Stripe's window), processing ones are read back from Stripe and
    settled through the webhook's own function. Returns the ids of both."""
    resent = []
    claimed = AutoTopUpCharge.objects.filter(status=AutoTopUpCharge.Status.CLAIMED,
                                             created_at__lt=now - CLAIM_GRACE)
    for charge in claimed.order_by("id"):
        if charge.created_at < now - IDEMPOTENCY_WINDOW:
            logger.error("auto top-up charge %d: no answer from Stripe in a day; ended. "
                         "Check the wallet's payments in Stripe's dashboard", charge.pk)
            auto_topup_charge_fail(charge_id=charge.pk, reason=(
                "The payment provider did not confirm the charge within a day. Check the "
                "card's statement before turning auto top-up on again."))
        else:
            auto_topup_charge_send(charge=charge)
        resent.append(charge.pk)
    looked_up = []
    processing = AutoTopUpCharge.objects.filter(status=AutoTopUpCharge.Status.PROCESSING,
                                                updated_at__lt=now - WEBHOOK_GRACE)
    for charge in processing.exclude(payment_intent_id="").order_by("id"):
        try:
            intent = stripe_client().v1.payment_intents.retrieve(charge.payment_intent_id)
        except stripe.StripeError as exc:
            logger.warning("auto top-up charge %d: could not read intent %s: %s", charge.pk,
                           charge.payment_intent_id, exc)
            continue
        auto_topup_intent_apply(intent=intent.to_dict(), source=Source.RECONCILE)
        looked_up.append(charge.pk)
    return resent, looked_up
