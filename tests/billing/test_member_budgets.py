"""A member's budget in an organization moves with the organization's wallet, in the same
statement: under concurrency no member spends past their cap, the request path (grouped
and one by one) and the ORM services alike, and settling counts what was spent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.errors import InsufficientFunds, KeySpendCapReached
from billing.models import MemberBudget, UsageRecord, Wallet
from billing.selectors import spending_room_of, wallet_audit
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from billing.services.hot_path import close_pools, hold_reserve, hold_resolve, spending_room
from organizations.models import Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    member_budget_update,
    organization_create,
    organization_key_create,
)
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _pools_closed(loop) -> Iterator[None]:
    yield
    loop.run(close_pools())


@pytest.fixture(params=["batched", "alone"])
def path(request, settings) -> str:
    settings.ROUTER_DB_BATCHING = request.param == "batched"
    # Enough connections for real contention; at 40 (with the ORM threads beside them) this
    # file held 74 of PostgreSQL's 100 at once, and a test on the other xdist worker starting
    # two routers was refused connections ("too many clients already").
    settings.ROUTER_DB_POOL_SIZE = 16
    return request.param


@pytest.fixture
def team(make_user):
    owner, member = make_user(), make_user()
    organization = organization_create(name="Team", owner=owner)
    _, token = invitation_create(organization=organization, actor=owner, email=member.email,
                                 role=Role.MEMBER)
    invitation_accept(token=token, user=member)
    wallet = Wallet.objects.get(organization=organization)
    wallet_credit(wallet=wallet, amount_micros=1_000_000, idempotency_key="fund", memo="",
                  kind="topup")
    keys = {who: organization_key_create(organization=organization, actor=user).api_key
            for who, user in (("owner", owner), ("member", member))}
    return organization, owner, member, wallet, keys


def _reserve(wallet: Wallet, key: Any, price: Any, hold_id: str, amount: int) -> Any:
    return hold_reserve(wallet_id=wallet.pk, hold_id=hold_id, amount_micros=amount,
                        price_id=price.pk, model=price.model, api_key_id=key.pk,
                        expires_at=timezone.now() + timedelta(minutes=5))


def test_concurrent_reservations_stop_exactly_at_the_members_cap(loop, path, team, price):
    organization, owner, member, wallet, keys = team
    member_budget_update(organization=organization, actor=owner, user=member,
                         lifetime_limit_micros=10 * 1_000 + 999, monthly_limit_micros=None)

    async def all_at_once() -> list[Any]:
        member_holds = (_reserve(wallet, keys["member"], price, f"m{i}", 1_000)
                        for i in range(40))
        owner_holds = (_reserve(wallet, keys["owner"], price, f"o{i}", 1_000)
                       for i in range(20))
        return await asyncio.gather(*member_holds, *owner_holds, return_exceptions=True)

    results = loop.run(all_at_once())

    member_results, owner_results = results[:40], results[40:]
    assert sum(r is None for r in member_results) == 10
    refused = [r for r in member_results if r is not None]
    assert all(isinstance(r, KeySpendCapReached) and r.period == "member lifetime"
               for r in refused), refused[:3]
    assert owner_results == [None] * 20  # another member's budget is not theirs
    budget = MemberBudget.objects.get(organization=organization, user=member)
    assert budget.pending_micros == 10_000
    wallet.refresh_from_db()
    assert wallet.pending_micros == 30_000


def test_settling_counts_the_charge_for_the_member_and_the_record_for_both(
    loop, path, team, price
):
    organization, _, member, wallet, keys = team
    loop.run(_reserve(wallet, keys["member"], price, "one", 5_000))
    usage = UsageReport(prompt_tokens=100, completion_tokens=100, worker="w")
    assert loop.run(hold_resolve(hold_id="one", usage=usage, cost_micros=300)) == 300

    budget = MemberBudget.objects.get(organization=organization, user=member)
    assert (budget.spent_micros, budget.month_spent_micros, budget.pending_micros) == (
        300, 300, 0)
    record = UsageRecord.objects.get()
    assert (record.user_id, record.organization_id) == (member.pk, organization.pk)
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_the_room_a_request_may_plan_for_is_the_tightest_of_every_limit(loop, team):
    organization, owner, member, wallet, keys = team
    member_budget_update(organization=organization, actor=owner, user=member,
                         lifetime_limit_micros=None, monthly_limit_micros=700)
    room = loop.run(spending_room(wallet_id=wallet.pk, api_key_id=keys["member"].pk))
    assert room == spending_room_of(wallet_id=wallet.pk, api_key_id=keys["member"].pk)
    assert room.tightest() == ("member monthly", 700, 0)
    owner_room = loop.run(spending_room(wallet_id=wallet.pk, api_key_id=keys["owner"].pk))
    assert owner_room.tightest() == ("balance", 1_000_000, 0)


def test_the_orm_services_keep_the_same_rule(team, price):
    organization, owner, member, wallet, keys = team
    member_budget_update(organization=organization, actor=owner, user=member,
                         lifetime_limit_micros=5 * 1_000, monthly_limit_micros=None)

    def reserve(index: int) -> Any:
        return hold_create(wallet=wallet, hold_id=f"orm{index}", amount_micros=1_000,
                           price=price, model=price.model, api_key=keys["member"])

    results = run_concurrently(reserve, [(i,) for i in range(20)], threads=20)
    assert sum(not isinstance(r, Exception) for r in results) == 5
    assert all(isinstance(r, KeySpendCapReached) for r in results
               if isinstance(r, Exception))
    hold_settle(hold_id=next(r.pk for r in results if not isinstance(r, Exception)),
                usage=UsageReport(prompt_tokens=10, completion_tokens=10, worker="w"))
    budget = MemberBudget.objects.get(organization=organization, user=member)
    assert (budget.spent_micros, budget.pending_micros) == (30, 4_000)


def test_an_empty_organization_wallet_refuses_with_its_own_balance(loop, team, price):
    _, _, _, wallet, keys = team
    with pytest.raises(InsufficientFunds) as refused:
        loop.run(_reserve(wallet, keys["owner"], price, "big", 1_000_001))
    assert refused.value.available_micros == 1_000_000
