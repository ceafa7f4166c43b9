"""A user's history of top-ups, vouchers, card payments, charges, request refunds, card
refunds and adjustments at chosen times, with a log of what each should have posted: the
statements' tests (read from the ledger, and from the ledger days) run the same histories."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from unittest import mock

from django.db import transaction
from hypothesis import strategies as st

from accounts.services import user_create
from audit.actors import Actor
from billing.errors import InsufficientFunds
from billing.models import CheckoutTopUp, UsageRecord
from billing.models.topups import TopUpRefund
from billing.services import UsageReport, hold_create, hold_settle, price_set, wallet_credit
from billing.services.refunds import usage_refund
from billing.services.topup_refunds import refund_event_apply

_ids = itertools.count(1)
START = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)

op = st.one_of(
    st.tuples(st.just("topup"), st.integers(1, 5_000_000)),
    st.tuples(st.just("voucher"), st.integers(1, 2_000_000)),
    st.tuples(st.just("card"), st.integers(1, 500).map(lambda cents: cents * 10_000)),
    st.tuples(st.just("charge"), st.integers(0, 1), st.integers(1, 3_000),
              st.integers(0, 3_000)),
    st.tuples(st.just("refund"), st.integers(0, 50)),
    st.tuples(st.just("card_refund"), st.integers(1, 400)),
    st.tuples(st.just("adjust"), st.integers(-3_000_000, 3_000_000).filter(bool)),
)
# Each step moves the clock on, sometimes to exactly midnight of the next month's first day.
step = st.one_of(st.integers(0, 20 * 86_400).map(lambda s: timedelta(seconds=s)),
                 st.just("month_start"))


def next_month_start(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def months_between(first: datetime, last: datetime) -> list[date]:
    months, month = [], first.date().replace(day=1)
    while month <= last.date():
        months.append(month)
        month = next_month_start(datetime(month.year, month.month, 1, tzinfo=UTC)).date()
    return months


class History:
    """Runs operations for one fresh user at chosen times, keeping its own log of what each
    should have posted: (time, kind, model, amount)."""

    def __init__(self, prices) -> None:
        self.user = user_create(email=f"statement{next(_ids)}@example.com")
        self.prices = prices
        self.log: list[tuple[datetime, str, str, int]] = []
        self.charged: list[UsageRecord] = []
        self.topups: list[CheckoutTopUp] = []

    def run(self, now: datetime, operation: tuple) -> None:
        with mock.patch("django.utils.timezone.now", return_value=now):
            self._run(now, operation)

    def _run(self, now: datetime, operation: tuple) -> None:
        name, *args = operation
        key = f"h{next(_ids)}"
        if name in ("topup", "voucher"):
            wallet_credit(user=self.user, amount_micros=args[0], kind=name,
                          idempotency_key=key, memo=name)
            self.log.append((now, name, "", args[0]))
        elif name == "card":
            entry = wallet_credit(user=self.user, amount_micros=args[0], kind="topup",
                                  idempotency_key=f"stripe:pi_{key}", memo="card")
            self.topups.append(CheckoutTopUp.objects.create(
                user=self.user, amount_micros=args[0], currency="usd", status="paid",
                payment_intent_id=f"pi_{key}", credited_entry=entry))
            self.log.append((now, "topup", "", args[0]))
        elif name == "charge":
            price = self.prices[args[0]]
            try:
                hold_create(user=self.user, hold_id=key, amount_micros=20_000, price=price,
                            model=price.model)
            except InsufficientFunds:
                return
            record = hold_settle(hold_id=key, usage=UsageReport(
                prompt_tokens=args[1], completion_tokens=args[2])).usage_record
            if record.cost_micros:
                self.charged.append(record)
                self.log.append((now, "charge", price.model, -record.cost_micros))
        elif name == "refund" and self.charged:
            record = self.charged[args[0] % len(self.charged)]
            result = usage_refund(usage_record=record, reason="r", actor=Actor.cli())
            if result.created:
                self.log.append((now, "refund", record.model, result.entry.amount_micros))
        elif name == "card_refund" and self.topups:
            topup = self.topups[args[0] % len(self.topups)]
            cents = max(1, min(args[0], topup.amount_micros // 10_000))
            with transaction.atomic():
                refund_event_apply(refund={
                    "id": f"re_{key}", "amount": cents, "currency": "usd",
                    "payment_intent": topup.payment_intent_id, "status": "succeeded"})
            row = TopUpRefund.objects.get(stripe_refund_id=f"re_{key}")
            if row.debit_entry is not None:  # nothing when the wallet was empty
                self.log.append((now, "card_refund", "", row.debit_entry.amount_micros))
        elif name == "adjust":
            try:
                wallet_credit(user=self.user, amount_micros=args[0], kind="adjustment",
                              idempotency_key=key, memo="adj")
            except InsufficientFunds:
                return
            self.log.append((now, "adjustment", "", args[0]))


def prices_create() -> list:
    """Two models' prices, in effect from before START: what the histories charge at."""
    return [price_set(model="alpha", input_usd_per_mtok="1", output_usd_per_mtok="2",
                      max_output_tokens=4000, effective_from=START - timedelta(days=1)),
            price_set(model="beta", input_usd_per_mtok="0.5", output_usd_per_mtok="3.25",
                      max_output_tokens=4000, effective_from=START - timedelta(days=1))]
