"""The sweeper expires holds a batch at a time on PostgreSQL, and moves every balance and
budget exactly as expiring them one by one does, beside sweepers and settles racing it."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection, transaction  # noqa: F401 - connection: the skipif
from django.db.models import F
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_create
from billing.models import Hold, KeyBudget, LedgerEntry, MemberBudget, Wallet
from billing.services import UsageReport, hold_settle, hold_void, wallet_credit
from billing.services.budgets import current_month, key_budget_set, member_budget_set
from billing.services.hot_path import close_pools, hold_resolve
from billing.services.sweeper import _expire_one_by_one, holds_sweep, wallets_reconcile
from organizations.models import Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    organization_create,
    organization_key_create,
)
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.skipif("connection.vendor != 'postgresql'",
                                reason="the batched sweep is PostgreSQL's")


@dataclass
class Spender:
    wallet: Wallet
    key: ApiKey | None


@pytest.fixture
def spenders(make_user) -> list[Spender]:
    """Personal wallets with and without a capped key, and an organization's wallet spent
    by its owner's and a member's keys (each with a member budget) and a service key."""
    alone, keyed, owner, member = (make_user() for _ in range(4))
    organization = organization_create(name="Acme", owner=owner)
    _, token = invitation_create(organization=organization, actor=owner, email=member.email,
                                 role=Role.MEMBER)
    invitation_accept(token=token, user=member)
    org_wallet = Wallet.objects.get(organization=organization)
    for index, (user, wallet) in enumerate(((alone, None), (keyed, None), (None, org_wallet))):
        wallet_credit(user=user, wallet=wallet, amount_micros=50_000_000,
                      idempotency_key=f"fund-{index}", memo="", kind="topup")
    personal_key = api_key_create(user=keyed).api_key
    owner_key = organization_key_create(organization=organization, actor=owner).api_key
    member_key = organization_key_create(organization=organization, actor=member).api_key
    service_key = organization_key_create(organization=organization, actor=owner,
                                          service=True).api_key
    for key in (personal_key, member_key, service_key):
        key_budget_set(api_key=key, lifetime_limit_micros=40_000_000,
                       monthly_limit_micros=30_000_000)
    member_budget_set(organization_id=organization.pk, user_id=member.pk,
                      lifetime_limit_micros=20_000_000, monthly_limit_micros=None)
    return [Spender(Wallet.objects.get(user=alone), None),
            Spender(Wallet.objects.get(user=keyed), None),
            Spender(Wallet.objects.get(user=keyed), personal_key),
            Spender(org_wallet, owner_key), Spender(org_wallet, member_key),
            Spender(org_wallet, service_key)]


def _holds(spenders: list[Spender], price, count: int, *, prefix: str,
           expired: bool = True, seed: int = 1) -> list[str]:
    """Pending holds with the balances and budgets they reserve, as ``hold_create`` leaves
    them, made in a few statements (thousands of reservations one by one take a while)."""
    rng = random.Random(seed)
    moment = timezone.now() + (timedelta(seconds=-1) if expired else timedelta(minutes=5))
    holds = [Hold(id=f"{prefix}-{i}", wallet=spenders[i % len(spenders)].wallet,
                  api_key=spenders[i % len(spenders)].key, price=price, model=price.model,
                  amount_micros=rng.randint(1, 3_000), expires_at=moment)
             for i in range(count)]
    with transaction.atomic():
        Hold.objects.bulk_create(holds, batch_size=500)
        by_wallet: dict[int, int] = defaultdict(int)
        by_key: dict[ApiKey, int] = defaultdict(int)
        for hold in holds:
            by_wallet[hold.wallet_id] += hold.amount_micros
            if hold.api_key is not None:
                by_key[hold.api_key] += hold.amount_micros
        for wallet_id, amount in by_wallet.items():
            Wallet.objects.filter(pk=wallet_id).update(pending_micros=F("pending_micros")
                                                       + amount)
        for key, amount in by_key.items():
            budgets = [KeyBudget.objects.filter(api_key=key)]
            if key.organization_id is not None and not key.service:
                budgets.append(MemberBudget.objects.filter(
                    organization_id=key.organization_id, user_id=key.user_id))
            for budget in budgets:
                budget.update(pending_micros=F("pending_micros") + amount,
                              month=current_month())
    return [hold.pk for hold in holds]


def _state() -> dict[str, Any]:
    """Every balance, budget and hold, without the times at which they moved."""
    return {
        "wallets": sorted(Wallet.objects.values_list("pk", "posted_micros",
                                                     "pending_micros")),
        "key budgets": sorted(KeyBudget.objects.values_list(
            "pk", "spent_micros", "pending_micros", "month", "month_spent_micros")),
        "member budgets": sorted(MemberBudget.objects.values_list(
            "pk", "spent_micros", "pending_micros", "month", "month_spent_micros")),
        "holds": sorted(Hold.objects.values_list("pk", "status", "charged_micros")),
        "ledger": LedgerEntry.objects.count(),
    }


def _pending_by(field: str) -> dict[Any, int]:
    sums: dict[Any, int] = defaultdict(int)
    for key, amount in Hold.objects.filter(status="pending").values_list(field,
                                                                        "amount_micros"):
        sums[key] += amount
    return sums


def _assert_budgets_match_their_pending_holds() -> None:
    by_key = _pending_by("api_key_id")
    for budget in KeyBudget.objects.all():
        assert budget.pending_micros == by_key.get(budget.api_key_id, 0)
    by_member: dict[tuple[int, int], int] = defaultdict(int)
    for key in ApiKey.objects.filter(organization__isnull=False, service=False):
        by_member[(key.organization_id, key.user_id)] += by_key.get(key.pk, 0)
    for member in MemberBudget.objects.all():
        assert member.pending_micros == by_member[(member.organization_id, member.user_id)]


def test_a_batched_sweep_moves_every_balance_and_budget_as_hold_by_hold_does(
    spenders, price
):
    expired = _holds(spenders, price, 800, prefix="dead")  # three batches of 300
    live = _holds(spenders, price, 60, prefix="live", expired=False, seed=2)
    hold_settle(hold_id=expired[0], usage=UsageReport(prompt_tokens=10, completion_tokens=5))
    hold_void(hold_id=expired[1])
    # A budget last moved in an earlier month: releasing a hold starts the month's count
    # again, as budget_resolve does.
    KeyBudget.objects.filter(api_key=spenders[2].key).update(month=date(2020, 1, 1))
    MemberBudget.objects.filter(pending_micros__gt=0).update(month=date(2020, 1, 1))
    with transaction.atomic():
        one_by_one = _expire_one_by_one(timezone.now(), 10_000)[1]
        reference = _state()
        transaction.set_rollback(True)

    result = holds_sweep(batch=300)

    assert sorted(result.expired) == sorted(one_by_one) == sorted(expired[2:])
    assert _state() == reference
    assert wallets_reconcile() == []
    assert sum(Wallet.objects.values_list("pending_micros", flat=True)) == sum(
        Hold.objects.filter(pk__in=live).values_list("amount_micros", flat=True))
    _assert_budgets_match_their_pending_holds()
    assert set(KeyBudget.objects.values_list("month", flat=True)) == {current_month()}
    resolved = Hold.objects.filter(pk__in=result.expired)
    assert set(resolved.values_list("status", "charged_micros")) == {("expired", 0)}
    assert not resolved.filter(resolved_at__isnull=True).exists()
    assert holds_sweep().expired == []


@pytest.mark.django_db(transaction=True)
def test_two_sweepers_and_settles_racing_them_resolve_each_hold_once(spenders, price,
                                                                      loop):
    racing = _holds(spenders, price, 600, prefix="race", seed=3)
    rng = random.Random(4)
    contested = rng.sample(racing, 240)
    usage = UsageReport(prompt_tokens=300, completion_tokens=200)

    def act(kind: str, hold_id: str = "") -> Any:
        if kind == "sweep":
            return holds_sweep(batch=40).expired
        if kind == "orm":
            return not hold_settle(hold_id=hold_id, usage=usage).already_resolved
        # None: the hold was no longer pending, nothing was charged.
        return loop.run(hold_resolve(hold_id=hold_id, usage=usage, cost_micros=700)) is not None

    # Both sweepers start at once with six threads settling (half through the ORM, half
    # through the request path's statement) holds the sweepers are after too.
    calls = [("sweep",), ("sweep",)] + [
        ("orm" if i % 2 else "sql", hold_id) for i, hold_id in enumerate(contested)]
    results = run_concurrently(act, calls, threads=8)
    loop.run(close_pools())

    assert not [r for r in results if isinstance(r, Exception)]
    swept = [hold_id for result in results[:2] for hold_id in result]
    settled = [hold_id for (_, hold_id), won in zip(calls[2:], results[2:], strict=True)
               if won]
    assert len(swept) == len(set(swept))
    assert not set(swept) & set(settled)
    assert sorted(swept + settled) == sorted(racing)
    statuses = dict(Hold.objects.values_list("pk", "status"))
    assert {statuses[h] for h in swept} <= {"expired"}
    assert {statuses[h] for h in settled} <= {"posted"}
    charges = LedgerEntry.objects.filter(kind="charge")
    assert sorted(charges.values_list("hold_id", flat=True)) == sorted(settled)
    assert wallets_reconcile() == []
    assert not Hold.objects.filter(status="pending").exists()
    _assert_budgets_match_their_pending_holds()
    charged_by_key = defaultdict(int)
    for key_id, charged in Hold.objects.filter(status="posted").values_list(
            "api_key_id", "charged_micros"):
        charged_by_key[key_id] += charged
    for budget in KeyBudget.objects.all():
        assert budget.spent_micros == charged_by_key[budget.api_key_id]
