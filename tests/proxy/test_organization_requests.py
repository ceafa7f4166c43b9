"""Requests with an organization's key: they spend the organization's wallet, count against
the key owner's budget there, say which limit refused them, and get an output cap that
every limit affords."""

from __future__ import annotations

import openai
import pytest

from accounts.models import ApiKey
from accounts.services import user_create
from billing.models import MemberBudget, RefusedRequests, UsageRecord, Wallet
from billing.services import key_budget_set, wallet_credit
from organizations.models import Role
from organizations.services import (
    invitation_accept,
    invitation_create,
    member_budget_update,
    organization_create,
    organization_key_create,
)

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(autouse=True)
def _refused_at_once(settings):
    settings.ROUTER_RESERVE_WAIT_MS = 0


@pytest.fixture
def acme(transactional_db):
    owner = user_create(email="owner@example.com")
    member = user_create(email="member@example.com")
    organization = organization_create(name="Acme", owner=owner)
    _, token = invitation_create(organization=organization, actor=owner, email=member.email,
                                 role=Role.MEMBER)
    invitation_accept(token=token, user=member)
    wallet = Wallet.objects.get(organization=organization)
    wallet_credit(wallet=wallet, amount_micros=1_000_000, idempotency_key="fund", memo="",
                  kind="topup")
    return organization, owner, member, wallet


def test_an_organization_key_spends_the_organization_and_counts_for_its_member(
    openai_worker, acme, client_for, router
):
    organization, _, member, wallet = acme
    personal = Wallet.objects.get(user=member)
    secret = organization_key_create(organization=organization, actor=member).secret

    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                               max_tokens=5)
    router.drain()

    record = UsageRecord.objects.get()
    assert (record.user_id, record.organization_id) == (member.pk, organization.pk)
    wallet.refresh_from_db()
    personal.refresh_from_db()
    assert wallet.posted_micros == 1_000_000 - record.cost_micros
    assert personal.posted_micros == 0
    budget = MemberBudget.objects.get(organization=organization, user=member)
    assert (budget.spent_micros, budget.pending_micros) == (record.cost_micros, 0)


def test_a_service_key_spends_the_wallet_outside_every_members_budget(
    openai_worker, acme, client_for, router
):
    organization, owner, _, _ = acme
    secret = organization_key_create(organization=organization, actor=owner,
                                     service=True).secret
    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                               max_tokens=5)
    router.drain()
    assert UsageRecord.objects.get().organization_id == organization.pk
    assert sum(MemberBudget.objects.values_list("spent_micros", flat=True)) == 0


def test_each_refusal_says_which_limit_refused(openai_worker, acme, client_for, router):
    organization, owner, member, wallet = acme
    member_budget_update(organization=organization, actor=owner, user=member,
                         lifetime_limit_micros=20, monthly_limit_micros=None)
    member_key = organization_key_create(organization=organization, actor=member)
    owner_key = organization_key_create(organization=organization, actor=owner)
    key_budget_set(api_key=ApiKey.objects.get(pk=owner_key.api_key.pk),
                   lifetime_limit_micros=15, monthly_limit_micros=None)

    with pytest.raises(openai.APIStatusError) as by_budget:
        client_for(member_key.secret).chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=50)
    with pytest.raises(openai.APIStatusError) as by_cap:
        client_for(owner_key.secret).chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=50)
    Wallet.objects.filter(pk=wallet.pk).update(posted_micros=10)  # as if it were spent
    service = organization_key_create(organization=organization, actor=owner, service=True)
    with pytest.raises(openai.APIStatusError) as by_balance:
        client_for(service.secret).chat.completions.create(
            model="test-model", messages=MESSAGES, max_tokens=50)
    router.drain()

    assert by_budget.value.status_code == by_cap.value.status_code == 402
    assert "your lifetime budget in this organization" in by_budget.value.message
    assert "This API key has reached its lifetime spend cap" in by_cap.value.message
    assert "the organization's available balance is $0.000010" in by_balance.value.message
    assert dict(RefusedRequests.objects.values_list("reason", "count")) == {
        "member_budget": 1, "key_cap": 1, "balance": 1}


def test_without_a_cap_the_output_is_capped_at_what_the_members_budget_affords(
    openai_worker, upstream, acme, client_for, router
):
    organization, owner, member, _ = acme
    # 1 and 2 micro-USD per input and output token: 300 leave room for about 140 tokens
    # out, well below the model's 500 and the organization's million.
    member_budget_update(organization=organization, actor=owner, user=member,
                         lifetime_limit_micros=None, monthly_limit_micros=300)
    secret = organization_key_create(organization=organization, actor=member).secret

    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    router.drain()

    cap = upstream.bodies[-1]["max_tokens"]
    assert 1 <= cap < 150
    budget = MemberBudget.objects.get(organization=organization, user=member)
    assert budget.month_spent_micros <= 300
