"""The admin's money lists with an organization's wallet among them: its rows name the
organization (a wallet has no user then), and staff can credit it like a user's."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import LedgerEntry, Wallet
from billing.services import hold_create, wallet_credit
from organizations.services import organization_create

from .test_admin import _credit

pytestmark = pytest.mark.django_db


@pytest.fixture
def org_wallet(make_user, price) -> Wallet:
    organization = organization_create(name="Acme Research", owner=make_user())
    wallet = Wallet.objects.get(organization=organization)
    wallet_credit(wallet=wallet, amount_micros=2_000_000, idempotency_key="org-seed",
                  memo="seed", kind=LedgerEntry.Kind.TOPUP)
    hold_create(wallet=wallet, hold_id="req-org", amount_micros=1_000, price=price,
                model=price.model)
    return wallet


@pytest.mark.parametrize("model", ["ledgerentry", "hold"])
def test_lists_with_an_organization_wallet_name_the_organization(admin_client, org_wallet,
                                                                 model):
    response = admin_client.get(reverse(f"admin:billing_{model}_changelist"))
    assert response.status_code == 200
    assert "Acme Research (organization)" in response.content.decode()
    found = admin_client.get(reverse(f"admin:billing_{model}_changelist"), {"q": "Acme"})
    assert "Acme Research (organization)" in found.content.decode()


def test_staff_credit_an_organization_wallet(admin_client, org_wallet):
    _credit(admin_client, org_wallet, amount_usd="1.5", kind="topup")
    org_wallet.refresh_from_db()
    assert org_wallet.posted_micros == 3_500_000
    assert org_wallet.entries.order_by("-id").first().amount_micros == 1_500_000
