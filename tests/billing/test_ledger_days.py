"""Statements read from the ledger days equal those read from the ledger: for random
histories refreshed at random moments (entries before the mark read from the days, after it
from the ledger), for request refunds of older months, for the rows a refresh rewrites, and
while entries are written, the days refreshed and statements read at once."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.services import user_create
from audit.actors import Actor
from billing.models import LedgerDay, LedgerDayMark, Wallet
from billing.selectors.statements import statement
from billing.services import wallet_credit
from billing.services.ledger_days import LAG, ledger_days_refresh
from billing.services.refunds import usage_refund
from billing.tasks import ledger_days_task
from organizations.services import organization_create
from tests.billing.statement_history import (
    START,
    History,
    months_between,
    next_month_start,
    op,
    prices_create,
)

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="ledger days are kept on PostgreSQL only")


@pytest.fixture
def two_prices(db):
    return prices_create()


def _from_ledger(**kwargs):
    """The same statement read from the ledger: the days are not used without their mark."""
    with transaction.atomic():
        LedgerDayMark.objects.all().delete()
        shown = statement(**kwargs)
        transaction.set_rollback(True)
    return shown


@contextmanager
def _days_read():
    """Asserts the statements inside were read from the days, not summed from the ledger."""
    with CaptureQueriesContext(connection) as queries:
        yield
    sql = [query["sql"] for query in queries.captured_queries]
    assert any("FROM billing_ledgerday" in text for text in sql)
    assert not any("GROUP BY" in text and "billing_ledgerday" not in text for text in sql)


# Steps move the clock at most five days (a refresh sums every day it passes).
short_step = st.one_of(st.integers(0, 5 * 86_400).map(lambda s: timedelta(seconds=s)),
                       st.just("month_start"))


@pytest.mark.django_db
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(short_step, st.one_of(op, st.just(("refresh",)))),
                      min_size=1, max_size=25))
def test_statements_from_the_days_equal_those_from_the_ledger(two_prices, steps):
    # Examples share the test's transaction: each starts with no days and no mark.
    LedgerDay.objects.all().delete()
    LedgerDayMark.objects.all().delete()
    history = History(two_prices)
    now = START
    for move, operation in steps:
        now = next_month_start(now) if move == "month_start" else now + move
        if operation == ("refresh",):
            ledger_days_refresh(now=now)
        else:
            history.run(now, operation)
    ledger_days_refresh(now=now - timedelta(hours=1))  # the last hour stays in the tail

    previous_closing = 0
    for month in months_between(START, now):
        with _days_read():
            from_days = statement(user=history.user, month=month)
        assert from_days == _from_ledger(user=history.user, month=month), month
        assert from_days.reconciles
        assert from_days.opening_micros == previous_closing
        previous_closing = from_days.closing_micros


@pytest.mark.django_db
def test_a_refresh_writes_only_the_rows_that_changed(two_prices):
    history = History(two_prices)
    for hours, operation in ((1, ("topup", 5_000_000)), (2, ("charge", 0, 100, 200)),
                             (3, ("charge", 1, 100, 200)), (30, ("voucher", 1_000))):
        history.run(START + timedelta(hours=hours), operation)
    later = START + timedelta(days=3)

    first = ledger_days_refresh(now=later)
    again = ledger_days_refresh(now=later + timedelta(minutes=1))
    history.run(later + timedelta(minutes=2), ("charge", 0, 10, 10))
    third = ledger_days_refresh(now=later + timedelta(minutes=5))

    # top-up, alpha and beta charges on the first day; the voucher the next.
    assert (first.rows, again.rows, third.rows) == (4, 0, 1)
    wallet = Wallet.objects.get(user=history.user)
    charges = LedgerDay.objects.get(wallet=wallet, day=later.date(), kind="charge")
    assert (charges.model, charges.entries) == ("alpha", 1)
    assert LedgerDayMark.objects.get().complete_before == later + timedelta(minutes=5) - LAG


@pytest.mark.django_db
def test_entries_written_after_the_mark_are_on_the_statement(two_prices):
    history = History(two_prices)
    history.run(START, ("topup", 5_000_000))
    ledger_days_refresh(now=START + timedelta(hours=1))
    history.run(START + timedelta(hours=2), ("charge", 0, 1000, 1000))
    history.run(START + timedelta(hours=3), ("voucher", 7))

    with _days_read():
        shown = statement(user=history.user, month=START.date())

    assert shown == _from_ledger(user=history.user, month=START.date())
    assert [(line.kind, line.model, line.entries) for section in shown.sections
            for line in section.lines] == [("topup", "", 1), ("voucher", "", 1),
                                           ("charge", "alpha", 1)]
    assert shown.closing_micros == Wallet.objects.get(user=history.user).posted_micros


@pytest.mark.django_db
def test_the_refund_of_a_request_of_an_earlier_month_is_shown_under_its_model(two_prices):
    history = History(two_prices)
    history.run(START, ("topup", 5_000_000))
    history.run(START + timedelta(hours=1), ("charge", 1, 1000, 1000))
    march = datetime(2026, 3, 5, tzinfo=UTC)
    history.run(march, ("refund", 0))
    ledger_days_refresh(now=march + timedelta(days=1))

    with _days_read():
        shown = statement(user=history.user, month=march.date())

    assert [(line.kind, line.model) for line in shown.section("refunds").lines] == [
        ("refund", "beta")]
    assert shown == _from_ledger(user=history.user, month=march.date())


@pytest.mark.django_db
def test_an_organizations_statement_is_read_from_its_wallets_days(two_prices):
    owner = user_create(email="days-owner@example.com")
    organization = organization_create(name="Days Ltd", owner=owner)
    wallet = Wallet.objects.get(organization=organization)
    wallet_credit(wallet=wallet, amount_micros=3_000_000, kind="topup",
                  idempotency_key="org-days-1", memo="org")
    ledger_days_refresh(now=timezone.now() + LAG)  # the mark: now
    wallet_credit(wallet=wallet, amount_micros=1_000, kind="voucher",
                  idempotency_key="org-days-2", memo="org")
    month = timezone.localdate()

    with _days_read():
        shown = statement(wallet=wallet, month=month)

    assert shown == _from_ledger(wallet=wallet, month=month)
    assert (shown.holder, shown.movement_micros, shown.closing_micros) == (
        "Days Ltd", 3_001_000, 3_001_000)


@pytest.mark.django_db
def test_no_days_no_mark_the_statement_reads_the_ledger(two_prices):
    history = History(two_prices)
    history.run(START, ("topup", 5_000_000))

    shown = statement(user=history.user, month=START.date())

    assert not LedgerDayMark.objects.exists()
    assert (shown.opening_micros, shown.closing_micros) == (0, 5_000_000)


@pytest.mark.django_db(transaction=True)
def test_statements_reconcile_while_entries_are_written_and_the_days_refreshed(two_prices):
    # Writers credit and charge, a refresher moves the mark to a few milliseconds ago (a
    # minute in production) or to the oldest open transaction's start, readers read this
    # month's statement: every statement read must reconcile (days, mark and tail from one
    # snapshot, no entry still committing left out of both), and the last one equal the
    # ledger's.
    users = [user_create(email=f"days-race-{i}@example.com") for i in range(2)]
    for index, user in enumerate(users):
        wallet_credit(user=user, amount_micros=50_000_000, kind="topup",
                      idempotency_key=f"race-seed-{index}", memo="seed")
    stop = threading.Event()
    failures: list[str] = []
    reads, refreshes = [0], [0]

    def guarded(work):
        def run():
            try:
                while not stop.is_set():
                    work()
            except Exception as exc:
                failures.append(repr(exc))
                stop.set()
            finally:
                connection.close()
        return run

    counter = iter(range(10**9))

    def write():
        n = next(counter)
        user = users[n % 2]
        if n % 5 == 4:
            record = _charge(user, f"race-{n}", two_prices[n % 2])
            if record is not None and n % 10 == 9:
                usage_refund(usage_record=record, reason="r", actor=Actor.cli())
        else:
            wallet_credit(user=user, amount_micros=1_000 + n, kind="voucher",
                          idempotency_key=f"race-{n}", memo="race")

    def refresh():
        ledger_days_refresh(lag=timedelta(milliseconds=5))
        refreshes[0] += 1

    def read():
        month = timezone.localdate().replace(day=1)
        for user in users:
            shown = statement(user=user, month=month)
            if not shown.reconciles:
                failures.append(f"{user.email}: {shown.opening_micros} + "
                                f"{shown.movement_micros} != {shown.closing_micros}")
        reads[0] += 1

    threads = [threading.Thread(target=guarded(work)) for work in (write, write, refresh, read)]
    for thread in threads:
        thread.start()
    stopped_at = timezone.now() + timedelta(seconds=4)
    while timezone.now() < stopped_at and not stop.is_set():
        stop.wait(0.1)
    stop.set()
    for thread in threads:
        thread.join()

    assert failures == []
    assert reads[0] > 5
    assert refreshes[0] > 5
    assert LedgerDayMark.objects.exists()
    month = timezone.localdate().replace(day=1)
    for user in users:
        assert statement(user=user, month=month) == _from_ledger(user=user, month=month)


def _charge(user, key, price):
    from billing.errors import InsufficientFunds
    from billing.services import UsageReport, hold_create, hold_settle

    try:
        hold_create(user=user, hold_id=key, amount_micros=20_000, price=price,
                    model=price.model)
    except InsufficientFunds:
        return None
    return hold_settle(hold_id=key, usage=UsageReport(prompt_tokens=100,
                                                      completion_tokens=50)).usage_record



@pytest.mark.django_db
def test_beat_refreshes_the_days_every_minute(two_prices):
    history = History(two_prices)
    history.run(START, ("topup", 5_000_000))

    done = ledger_days_task()

    schedule = django_settings.CELERY_BEAT_SCHEDULE["ledger-days"]
    assert (schedule["task"], schedule["schedule"]) == ("billing.tasks.ledger_days_task", 60.0)
    assert done["rows"] >= 1
    assert LedgerDay.objects.filter(wallet__user=history.user, kind="topup").exists()
    assert LedgerDayMark.objects.get().complete_before <= timezone.now() - LAG
