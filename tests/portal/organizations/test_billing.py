"""An organization's billing page: its balance and ledger, and vouchers redeemed into its
wallet by billing members and owners (never into the redeemer's own)."""

from __future__ import annotations

import pytest

from billing.models import Voucher, Wallet
from billing.selectors import wallet_balance
from tests.portal.conftest import money_html
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["owner", "billing"])
def test_a_voucher_goes_to_the_organizations_balance(team, role):
    redeemer = team.users[role]
    response = signed_in(redeemer).post(f"/orgs/{team.organization.pk}/billing/voucher/",
                                        {"code": team.voucher}, follow=True)

    page = response.content.decode()
    assert "Voucher redeemed" in page
    assert "added to Acme&#x27;s balance" in page
    assert Wallet.objects.get(organization=team.organization).posted_micros == 55_000_000
    assert wallet_balance(user=redeemer).posted_micros == 0
    assert Voucher.objects.get().redeemed_by == redeemer
    assert f'data-testid="available-balance">{money_html(55_000_000)}<' in page
    ledger = page[page.index('data-testid="ledger-table"'):]
    assert "Voucher" in ledger
    assert money_html(5_000_000) in ledger


def test_a_used_voucher_is_refused_and_credits_nothing(team):
    client = signed_in(team.users["billing"])
    path = f"/orgs/{team.organization.pk}/billing/voucher/"
    client.post(path, {"code": team.voucher})

    response = client.post(path, {"code": team.voucher})

    assert response.status_code == 400
    assert Wallet.objects.get(organization=team.organization).posted_micros == 55_000_000


def test_card_top_ups_for_organizations_have_a_marked_place_and_charge_nothing(team):
    page = signed_in(team.users["owner"]).get(
        f"/orgs/{team.organization.pk}/billing/").content.decode()

    assert 'data-testid="org-card-topups-placeholder"' in page
    assert "/topups/checkout/" not in page
