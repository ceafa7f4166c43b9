"""An organization's overview: its balance, this month's spend (everyone's for roles that
see all usage, one's own for members) and how many members it has."""

from __future__ import annotations

import pytest

from tests.portal.conftest import money_html
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def test_an_admin_sees_the_balance_everyones_spend_and_the_member_count(team):
    page = signed_in(team.users["admin"]).get(f"/orgs/{team.organization.pk}/")

    html = page.content.decode()
    # 50 USD credited; three requests of 0.002 USD recorded (records only, no ledger rows).
    assert f'data-testid="available-balance">{money_html(50_000_000)}<' in html
    assert f'data-testid="spent-month">{money_html(6_000)}<' in html
    assert 'data-testid="members-count">5<' in html
    assert "Spent this month" in html


def test_a_member_sees_their_own_spend_and_budget(team):
    html = signed_in(team.users["member"]).get(
        f"/orgs/{team.organization.pk}/").content.decode()

    assert "You spent this month" in html
    assert f'data-testid="spent-month">{money_html(2_000)}<' in html
    assert 'data-testid="your-budget"' in html
    assert "Billing members and owners add money." in html
