"""Spend caps per API key, in the ORM services, the request-path statements and the DB."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.services import api_key_create
from billing.errors import InvalidAmount, KeySpendCapReached
from billing.models import Hold, KeyBudget
from billing.services import (
    UsageReport,
    budgets,
    hold_create,
    hold_settle,
    hold_void,
    key_budget_set,
    wallet_credit,
)
from billing.services.hot_path import close_pools, hold_reserve, hold_resolve
from tests.concurrency import run_concurrently
from tests.wallet_ids import wallet_id_of


@pytest.fixture
def key(user):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="fund", memo="")
    return api_key_create(user=user).api_key


def _hold(key, price, hold_id: str, amount: int) -> Hold:
    return hold_create(user=key.user, hold_id=hold_id, amount_micros=amount, price=price,
                       model=price.model, api_key=key)


def test_a_lifetime_cap_refuses_what_would_pass_it_and_counts_what_was_spent(key, price):
    key_budget_set(api_key=key, lifetime_limit_micros=1_000, monthly_limit_micros=None)
    _hold(key, price, "a", 600)
    with pytest.raises(KeySpendCapReached) as capped:
        _hold(key, price, "b", 401)
    assert (capped.value.period, capped.value.remaining_micros) == ("lifetime", 400)
    assert "lifetime spend cap" in str(capped.value)
    hold_settle(hold_id="a", usage=UsageReport(prompt_tokens=100, completion_tokens=50))
    budget = KeyBudget.objects.get(api_key=key)
    assert (budget.spent_micros, budget.pending_micros) == (200, 0)
    _hold(key, price, "c", 800)  # 200 spent + 800 = the cap exactly
    hold_void(hold_id="c")
    assert KeyBudget.objects.get(api_key=key).pending_micros == 0


def test_a_monthly_cap_starts_again_each_calendar_month(key, price, monkeypatch):
    # The month the budget counts is the one the test starts in: on the clock, a month's turn
    # between the spending and the refusal expected of it would start the count again.
    this_month = timezone.now().date().replace(day=1)
    monkeypatch.setattr(budgets, "current_month", lambda: this_month)
    key_budget_set(api_key=key, lifetime_limit_micros=None, monthly_limit_micros=500)
    _hold(key, price, "a", 500)
    hold_settle(hold_id="a", usage=UsageReport(prompt_tokens=200, completion_tokens=150))
    with pytest.raises(KeySpendCapReached) as capped:
        _hold(key, price, "b", 1)
    assert capped.value.period == "monthly"
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    KeyBudget.objects.filter(api_key=key).update(month=last_month)
    _hold(key, price, "c", 500)
    budget = KeyBudget.objects.get(api_key=key)
    assert (budget.month, budget.month_spent_micros, budget.spent_micros) == (
        this_month, 0, 500)


def test_the_database_refuses_a_budget_past_its_cap(key):
    key_budget_set(api_key=key, lifetime_limit_micros=100, monthly_limit_micros=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        KeyBudget.objects.filter(api_key=key).update(pending_micros=101)
    KeyBudget.objects.filter(api_key=key).update(spent_micros=90)
    with pytest.raises(InvalidAmount):
        key_budget_set(api_key=key, lifetime_limit_micros=80, monthly_limit_micros=None)


@pytest.mark.django_db(transaction=True)
def test_concurrent_request_path_reserves_stop_exactly_at_the_cap(user, price, settings):
    settings.ROUTER_DB_POOL_SIZE = 20
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="fund", memo="")
    key = api_key_create(user=user).api_key
    key_budget_set(api_key=key, lifetime_limit_micros=5 * 300 + 299,
                   monthly_limit_micros=None)

    wallet_id = wallet_id_of(user.pk)

    async def all_at_once() -> list[object]:
        try:
            return await asyncio.gather(*(hold_reserve(
                wallet_id=wallet_id, hold_id=f"r{i}", amount_micros=300,
                price_id=price.pk, model=price.model, api_key_id=key.pk,
                expires_at=timezone.now() + timedelta(minutes=5)) for i in range(30)),
                return_exceptions=True)
        finally:
            await close_pools()

    results = asyncio.run(all_at_once())
    assert sum(r is None for r in results) == 5, results[:3]
    refusals = [r for r in results if isinstance(r, KeySpendCapReached)]
    assert len(refusals) == 25
    assert all(r.remaining_micros < 300 for r in refusals)
    assert KeyBudget.objects.get(api_key=key).pending_micros == 1_500
    # Which five won is up to the race (a failed batch retries its requests one by one).
    first_reserved = next(f"r{i}" for i, result in enumerate(results) if result is None)

    async def settle_one() -> object:
        try:
            return await hold_resolve(hold_id=first_reserved, usage=UsageReport(
                prompt_tokens=10, completion_tokens=10), cost_micros=30)
        finally:
            await close_pools()

    assert asyncio.run(settle_one()) == 30
    budget = KeyBudget.objects.get(api_key=key)
    assert (budget.spent_micros, budget.pending_micros, budget.month_spent_micros) == (
        30, 1_200, 30)
    assert isinstance(budget.month, date)


@pytest.mark.django_db(transaction=True)
def test_concurrent_orm_holds_stop_exactly_at_the_cap(user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="fund", memo="")
    key = api_key_create(user=user).api_key
    key_budget_set(api_key=key, lifetime_limit_micros=3 * 300, monthly_limit_micros=None)
    results = run_concurrently(lambda i: _hold(key, price, f"o{i}", 300),
                               [(i,) for i in range(20)], threads=10)
    assert sum(isinstance(r, Hold) for r in results) == 3
