"""An organization's wallet, its members' budgets and its keys' caps hold together under
concurrency: requests from several members, spread over two router processes, never spend
past any of them, and the books balance."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from django.db import connection

from accounts.services import user_create
from billing.models import Hold, LedgerEntry, MemberBudget, UsageRecord, Wallet
from billing.selectors import wallet_audit
from billing.services import price_set, wallet_credit
from organizations.models import Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    member_budget_update,
    organization_create,
    organization_key_create,
)
from proxy.dialects.chat.request import parse_chat_request
from proxy.models import Worker, WorkerModel
from proxy.money.plan import capped_plan
from tests.live_router import wait_for_charges
from tests.router_processes import env_for_test_database, router_processes

BODY = {"model": "org-model", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say something."}]}


@pytest.fixture
def org_model(upstream, transactional_db) -> int:
    """``org-model`` on a slow upstream (every call reserves before any settles); returns
    the hold of one BODY request."""
    price = price_set(model="org-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
                      max_output_tokens=100)
    worker = Worker(name="slow", kind="openai", base_url=upstream.base_url,
                    max_concurrency=500)
    worker.set_api_key("k")
    worker.save()
    WorkerModel.objects.create(worker=worker, model="org-model", upstream_model="m")
    upstream.configure(first_byte_delay=3.0)
    plan = capped_plan(parse_chat_request(orjson.dumps(BODY)), price)
    assert plan is not None
    return plan.amount_micros


@pytest.fixture
def two_routers(org_model, settings) -> Iterator[list[str]]:
    env = env_for_test_database(REDIS_URL=settings.REDIS_URL, ROUTER_RESERVE_WAIT_MS="0")
    with router_processes(2, env) as routers:
        yield [router.base_url for router in routers]


def _member(organization, owner, email: str):
    user = user_create(email=email)
    _, token = invitation_create(organization=organization, actor=owner, email=email,
                                 role=Role.MEMBER)
    invitation_accept(token=token, user=user)
    return user


def _cap_taken(organization_id: int, user_id: int, cap_micros: int) -> bool:
    """The member's budget has reserved or spent its whole cap (read on a thread's own
    connection, closed after: the routers commit what it reads)."""
    try:
        budget = MemberBudget.objects.get(organization_id=organization_id, user_id=user_id)
        return budget.spent_micros + budget.pending_micros >= cap_micros
    finally:
        connection.close()


async def _fire(urls: list[str], secrets: list[str],
                capped_full: Callable[[], bool]) -> list[int]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(index: int, secret: str) -> int:
            response = await client.post(f"{urls[index % 2]}/chat/completions", json=BODY,
                                         headers={"Authorization": f"Bearer {secret}"})
            return response.status_code

        # The capped member's requests go first, so that the wallet cannot run out before
        # their cap is reached: both limits are then met exactly.
        first = [asyncio.ensure_future(one(i, secrets[0])) for i in range(100)]
        # Waiting for their holds, not for a while: on a loaded machine the routers may
        # take seconds to reserve them (the upstream answers after 3 s, so they are pending).
        deadline = asyncio.get_running_loop().time() + 30
        while not await asyncio.to_thread(capped_full):
            assert asyncio.get_running_loop().time() < deadline, "the cap was never taken"
            await asyncio.sleep(0.02)
        rest = [asyncio.ensure_future(one(i, secret)) for secret in secrets[1:]
                for i in range(100)]
        return list(await asyncio.gather(*first, *rest))


def test_three_members_on_two_routers_spend_exactly_the_wallet_and_the_members_cap(
    two_routers, org_model
):
    hold = org_model
    owner = user_create(email="owner@example.com")
    organization = organization_create(name="Acme", owner=owner)
    capped = _member(organization, owner, "capped@example.com")
    other = _member(organization, owner, "other@example.com")
    wallet = Wallet.objects.get(organization=organization)
    wallet_credit(wallet=wallet, amount_micros=120 * hold, idempotency_key="fund", memo="",
                  kind="topup")
    member_budget_update(organization=organization, actor=owner, user=capped,
                         lifetime_limit_micros=30 * hold, monthly_limit_micros=None)
    secrets = [organization_key_create(organization=organization, actor=member).secret
               for member in (capped, other, owner)]

    statuses = asyncio.run(_fire(two_routers, secrets, functools.partial(
        _cap_taken, organization.pk, capped.pk, 30 * hold)))

    wait_for_charges(30)
    assert statuses.count(200) == 120, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(402) == 180
    assert statuses[:100].count(200) == 30  # the capped member's
    records = UsageRecord.objects.filter(organization=organization)
    assert records.count() == 120
    assert records.filter(user=capped).count() == 30
    assert not Hold.objects.filter(status="pending").exists()
    wallet.refresh_from_db()
    assert wallet.pending_micros == 0
    assert wallet_audit(wallet_id=wallet.pk).consistent
    charged = sum(records.values_list("cost_micros", flat=True))
    assert wallet.posted_micros == 120 * hold - charged
    assert -sum(LedgerEntry.objects.filter(wallet=wallet, kind="charge")
                .values_list("amount_micros", flat=True)) == charged
    budgets = {b.user_id: b for b in MemberBudget.objects.filter(organization=organization)}
    assert budgets[capped.pk].pending_micros == 0
    assert budgets[capped.pk].spent_micros == sum(
        records.filter(user=capped).values_list("cost_micros", flat=True))
    assert sum(b.spent_micros for b in budgets.values()) == charged
