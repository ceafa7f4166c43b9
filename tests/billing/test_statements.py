"""Monthly statements reconcile with the ledger: for random histories of top-ups, vouchers,
charges, request refunds, card refunds and adjustments across month boundaries, each month's
opening plus its entries is its closing, months chain, and every line is what the ledger
holds for that month."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import Wallet
from billing.selectors.statements import BadMonth, month_parse, statement
from portal.statement_csv import CLOSING, OPENING
from tests.billing.statement_history import (
    START,
    History,
    months_between,
    next_month_start,
    op,
    prices_create,
    step,
)


@pytest.fixture
def two_prices(db):
    return prices_create()


@pytest.mark.django_db
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(step, op), min_size=1, max_size=30))
def test_statements_reconcile_with_the_ledger_for_random_histories(two_prices, steps):
    history = History(two_prices)
    now = START
    for move, operation in steps:
        now = next_month_start(now) if move == "month_start" else now + move
        history.run(now, operation)

    previous_closing = 0
    total_movement = 0
    for month in months_between(START, now):
        s = statement(user=history.user, month=month)
        assert s.reconciles, month
        assert s.opening_micros == previous_closing
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for moment, kind, model, amount in history.log:
            if s.start <= moment < s.end:
                expected[(kind, model)] += amount
        shown = {(line.kind, line.model): line.amount_micros
                 for section in s.sections for line in section.lines}
        assert shown == dict(expected), month
        previous_closing = s.closing_micros
        total_movement += s.movement_micros
    wallet = Wallet.objects.filter(user=history.user).first()
    posted = wallet.posted_micros if wallet else 0
    assert previous_closing == posted == total_movement


@pytest.mark.django_db
def test_a_month_with_no_entries_carries_the_balance_over(two_prices):
    history = History(two_prices)
    history.run(START, ("topup", 7_000_000))

    s = statement(user=history.user, month=date(2026, 3, 1))

    assert (s.opening_micros, s.closing_micros, s.movement_micros) == (7_000_000, 7_000_000, 0)
    assert s.reconciles
    assert all(not section.lines for section in s.sections)


@pytest.mark.django_db
def test_an_entry_at_midnight_belongs_to_the_month_it_opens(two_prices):
    history = History(two_prices)
    history.run(datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC), ("topup", 1))
    history.run(datetime(2026, 2, 1, tzinfo=UTC), ("topup", 2))

    january = statement(user=history.user, month=date(2026, 1, 1))
    february = statement(user=history.user, month=date(2026, 2, 1))

    assert (january.closing_micros, february.opening_micros, february.movement_micros) == (
        1, 1, 2)


@pytest.mark.django_db
def test_the_check_is_the_ledgers_own_a_backdated_entry_fails_it(two_prices):
    # Entries are written in order under the wallet's lock, so created_at follows id; one
    # stamped earlier than an entry before it breaks the chain, and the statement says so.
    history = History(two_prices)
    history.run(datetime(2026, 2, 10, tzinfo=UTC), ("topup", 5_000_000))
    history.run(datetime(2026, 1, 10, tzinfo=UTC), ("topup", 1_000_000))

    assert not statement(user=history.user, month=date(2026, 1, 1)).reconciles


@pytest.mark.parametrize("value", ["2026-13", "2026-1", "26-01", "", "1999-12", "abcd-ef"])
def test_a_month_that_is_not_one_is_refused(value):
    with pytest.raises(BadMonth):
        month_parse(value)


def _csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response).decode())))


def _micros(text: str) -> int:
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))
    return -value if text.startswith("-") else value


@pytest.mark.django_db
def test_the_csvs_sums_equal_the_statement_page(admin_client, two_prices):
    histories = [History(two_prices) for _ in range(2)]
    for index, history in enumerate(histories):
        history.run(START, ("topup", 9_000_000 + index))
        history.run(datetime(2026, 1, 3, tzinfo=UTC), ("charge", 0, 1_000, 2_000))
        history.run(datetime(2026, 1, 4, tzinfo=UTC), ("charge", 1, 500, 900))
        history.run(datetime(2026, 1, 5, tzinfo=UTC), ("refund", 0))
        history.run(datetime(2026, 1, 6, tzinfo=UTC), ("voucher", 250_000))
        history.run(datetime(2026, 2, 2, tzinfo=UTC), ("adjust", -1_000))
    user = histories[0].user
    wallet = Wallet.objects.get(user=user)
    page = admin_client.get(reverse("admin:billing_wallet_statement", args=[wallet.pk]),
                            {"month": "2026-01"})
    s = page.context["statement"]
    assert page.status_code == 200
    assert "Reconciled" in page.text

    rows = _csv(admin_client.get(reverse("admin:billing_wallet_statement_csv",
                                         args=[wallet.pk]), {"month": "2026-01"}))

    assert (rows[0]["kind"], _micros(rows[0]["balance_after_usd"])) == (OPENING,
                                                                       s.opening_micros)
    assert (rows[-1]["kind"], _micros(rows[-1]["balance_after_usd"])) == (CLOSING,
                                                                         s.closing_micros)
    entries = rows[1:-1]
    assert sum(_micros(r["amount_usd"]) for r in entries) == s.movement_micros != 0
    for section in s.sections:
        kinds = {line.kind for line in section.lines}
        assert sum(_micros(r["amount_usd"]) for r in entries if r["kind"] in kinds) == (
            section.total_micros)
    charges = {line.model: line.amount_micros for line in s.section("charges").lines}
    assert set(charges) == {"alpha", "beta"}
    for model, amount in charges.items():
        assert sum(_micros(r["amount_usd"]) for r in entries
                   if r["kind"] == "charge" and r["model"] == model) == amount

    ledger = _csv(admin_client.get(reverse("admin:billing_ledgerentry_export"),
                                   {"month": "2026-01"}))
    january = [statement(user=h.user, month=date(2026, 1, 1)) for h in histories]
    assert sum(_micros(r["amount_usd"]) for r in ledger) == sum(
        st_.movement_micros for st_ in january)
    assert {r["user"] for r in ledger} == {h.user.email for h in histories}
    refund_row = next(r for r in ledger if r["user"] == user.email and r["kind"] == "refund")
    assert refund_row["request_id"] == histories[0].charged[0].request_id


@pytest.mark.django_db
def test_the_ledger_export_asks_for_a_month_and_is_for_staff_only(admin_client, client,
                                                                  make_user):
    url = reverse("admin:billing_ledgerentry_export")
    form = admin_client.get(url)
    assert form.status_code == 200
    assert "Download CSV" in form.text
    assert url in admin_client.get(reverse("admin:billing_ledgerentry_changelist")).text
    assert admin_client.get(url, {"month": "2026-13"}).status_code == 200  # the form again
    member = make_user(email="member@example.com")
    client.force_login(member)
    assert client.get(url, {"month": "2026-01"}).status_code == 302  # to the admin login
