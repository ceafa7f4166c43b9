"""Staff see organizations in the admin: members, balance, and the dashboard's figures for
that organization alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.services import user_create
from billing.models import UsageRecord, Wallet
from billing.services import wallet_credit
from organizations.figures import organization_figures
from organizations.services import organization_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(price):
    owner = user_create(email="owner@example.com")
    organization = organization_create(name="Acme", owner=owner)
    wallet = Wallet.objects.get(organization=organization)
    wallet_credit(wallet=wallet, amount_micros=5_000_000, idempotency_key="t", memo="",
                  kind="topup")
    now = timezone.now()
    for index, (cost, upstream, age, status) in enumerate([
        (300, 200, timedelta(hours=1), "ok"),
        (500, None, timedelta(days=3), "ok"),
        (0, None, timedelta(days=20), "upstream_error"),
        (900, 100, timedelta(days=40), "ok"),  # outside every period
    ]):
        record = UsageRecord.objects.create(
            request_id=f"r{index}", user=owner, organization=organization, model="m",
            price=price, cost_micros=cost, upstream_cost_micros=upstream, status=status,
            prompt_tokens=10, completion_tokens=5)
        UsageRecord.objects.filter(pk=record.pk).update(created_at=now - age)
    # A personal request of the same user is not the organization's.
    UsageRecord.objects.create(request_id="own", user=owner, model="m", price=price,
                               cost_micros=7_000)
    return organization


def test_the_figures_are_the_organizations_own_per_period(acme):
    figures = organization_figures(organization=acme)

    day, week, month = figures.periods
    assert (day.requests, day.charged_micros, day.upstream_micros, day.margin_micros) == (
        1, 300, 200, 100)
    assert (week.requests, week.charged_micros, week.unknown_cost_requests) == (2, 800, 1)
    assert week.margin_micros == 100  # over the request whose cost is known
    assert (month.requests, month.failed) == (3, 1)
    assert month.money_in_micros == 5_000_000
    assert figures.posted_micros == 5_000_000
    assert [(m.name, m.requests) for m in figures.top_members] == [("owner@example.com", 3)]


def test_staff_see_the_list_and_the_page(admin_client, acme):
    listing = admin_client.get(reverse("admin:organizations_organization_changelist"))
    assert listing.status_code == 200
    assert "Acme" in listing.content.decode()

    page = admin_client.get(reverse("admin:organizations_organization_change",
                                    args=[acme.pk])).content.decode()
    assert 'data-testid="organization-figures"' in page
    assert "owner@example.com" in page
    assert "$5.000000" in page
