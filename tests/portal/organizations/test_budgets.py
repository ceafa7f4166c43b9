"""Budgets per member in the portal: admins set caps in USD, read exactly to the
micro-USD; each member sees their own budget and spend, roles that see all usage every
member's."""

from __future__ import annotations

import re

import pytest

from billing.models import MemberBudget
from tests.portal.conftest import money_html
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def _rows(page: str) -> set[str]:
    return set(re.findall(r'<tr data-member="([^"]+)"', page))


def _budget(team, who: str) -> MemberBudget:
    return MemberBudget.objects.get(organization=team.organization, user=team.users[who])


def test_an_admin_sets_caps_in_usd_held_exactly_in_micros(team):
    target = team.users["target"]
    response = signed_in(team.users["admin"]).post(
        f"/orgs/{team.organization.pk}/budgets/{target.pk}/",
        {"monthly_cap_usd": "$12.345678", "lifetime_cap_usd": "1,000"})

    assert response.status_code == 302
    budget = _budget(team, "target")
    assert (budget.monthly_limit_micros, budget.lifetime_limit_micros) == (12_345_678,
                                                                          1_000_000_000)


@pytest.mark.parametrize("typed", ["1.0000001", "-3", "lots"])
def test_a_cap_that_is_not_an_exact_amount_is_refused(team, typed):
    target = team.users["target"]
    response = signed_in(team.users["admin"]).post(
        f"/orgs/{team.organization.pk}/budgets/{target.pk}/",
        {"monthly_cap_usd": typed, "lifetime_cap_usd": ""})

    assert response.status_code == 400
    assert _budget(team, "target").monthly_limit_micros is None


def test_a_cap_below_what_was_spent_is_refused_with_the_reason(team):
    MemberBudget.objects.filter(organization=team.organization,
                                user=team.users["target"]).update(spent_micros=2_000_000)
    response = signed_in(team.users["admin"]).post(
        f"/orgs/{team.organization.pk}/budgets/{team.users['target'].pk}/",
        {"monthly_cap_usd": "", "lifetime_cap_usd": "1"})

    assert response.status_code == 400
    assert "below what the member has already spent" in response.content.decode()


def test_clearing_a_cap_leaves_no_cap(team):
    MemberBudget.objects.filter(organization=team.organization,
                                user=team.users["target"]).update(monthly_limit_micros=5)
    signed_in(team.users["owner"]).post(
        f"/orgs/{team.organization.pk}/budgets/{team.users['target'].pk}/",
        {"monthly_cap_usd": "", "lifetime_cap_usd": ""})

    assert _budget(team, "target").monthly_limit_micros is None


def test_a_member_sees_only_their_own_budget_and_spend(team):
    MemberBudget.objects.filter(organization=team.organization,
                                user=team.users["member"]).update(
        spent_micros=1_500_000, monthly_limit_micros=10_000_000)

    page = signed_in(team.users["member"]).get(
        f"/orgs/{team.organization.pk}/budgets/").content.decode()

    assert _rows(page) == {"member@example.com"}
    assert money_html(1_500_000) in page
    assert money_html(10_000_000) in page
    assert "Set caps" not in page


@pytest.mark.parametrize("role", ["owner", "admin", "billing"])
def test_roles_that_see_all_usage_see_every_members_budget(team, role):
    page = signed_in(team.users[role]).get(
        f"/orgs/{team.organization.pk}/budgets/").content.decode()

    assert _rows(page) == {f"{who}@example.com" for who in
                           ("owner", "admin", "billing", "member", "target")}
    assert ("Set caps" in page) == (role != "billing")
