"""A member's requests with an organization's key are the organization's usage, not the
member's own: the personal usage pages, the roll-ups and the staff dashboard keep them apart."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import api_key_create, user_create
from billing.models import UsageRecord, UsageRollup, Wallet
from billing.selectors import usage_by_model, usage_daily, usage_records_of
from billing.services import wallet_credit
from billing.services.rollups import usage_rollup
from organizations.services import organization_create, organization_key_create
from router_admin.dashboard.money import spenders
from router_admin.dashboard.periods import window_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def spending(price):
    member = user_create(email="member@example.com")
    organization = organization_create(name="Acme", owner=member)
    wallet_credit(wallet=Wallet.objects.get(organization=organization),
                  amount_micros=1_000_000, idempotency_key="org", memo="", kind="topup")
    wallet_credit(user=member, amount_micros=500_000, idempotency_key="own", memo="",
                  kind="topup")
    org_key = organization_key_create(organization=organization, actor=member).api_key
    own_key = api_key_create(user=member).api_key
    yesterday = timezone.now() - timedelta(days=1)
    for index, (key, org, cost) in enumerate([(own_key, None, 100), (org_key, organization, 7_000),
                                               (org_key, organization, 3_000)]):
        record = UsageRecord.objects.create(
            request_id=f"r{index}", user=member, organization=org, api_key=key, model="m",
            price=price, cost_micros=cost)
        UsageRecord.objects.filter(pk=record.pk).update(created_at=yesterday)
        UsageRecord.objects.create(request_id=f"t{index}", user=member, organization=org,
                                   api_key=key, model="m", price=price, cost_micros=cost)
    usage_rollup(since=yesterday - timedelta(days=1))
    return member, organization


def test_the_members_own_usage_is_what_their_own_wallet_paid(spending):
    member, _ = spending
    assert [r.request_id for r in usage_records_of(user=member)] == ["t0", "r0"]
    assert [(day.requests, day.cost_micros) for day in usage_daily(user=member, days=2)] == [
        (1, 100), (1, 100)]
    assert [(row.model, row.cost_micros) for row in usage_by_model(user=member)] == [
        ("m", 200)]


def test_roll_ups_keep_the_organization_that_paid(spending):
    _, organization = spending
    org_rows = UsageRollup.objects.filter(period="day", organization=organization)
    assert sum(org_rows.values_list("cost_micros", flat=True)) == 20_000
    assert sum(UsageRollup.objects.filter(period="day", organization=None)
               .values_list("cost_micros", flat=True)) == 200


def test_the_dashboard_ranks_the_organization_apart_from_its_member(spending):
    member, organization = spending
    found = spenders(window_for("7d", timezone.now()))
    ranked = [(s.email, s.organization_id, s.spend_micros) for s in found.top]
    assert ranked == [("Acme", organization.pk, 20_000), (member.email, None, 200)]
    acme = found.top[0]
    assert acme.available_micros == 1_000_000
