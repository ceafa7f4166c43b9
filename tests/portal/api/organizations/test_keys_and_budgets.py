"""Keys and budgets through /api/orgs: what each role sees, the secret once, caps in exact
USD strings."""

from __future__ import annotations

import pytest

from billing.models import MemberBudget
from tests.portal.api.conftest import session_client

pytestmark = pytest.mark.django_db


def test_a_member_lists_only_their_own_keys(team, client_for):
    body = client_for(team.users["member"]).get(
        f"/api/orgs/{team.organization.pk}/keys").json()

    assert [key["prefix"] for key in body["results"]] == [team.keys["member"].prefix]
    assert body["results"][0]["spent_usd"] == "0.002000"


def test_an_admin_lists_every_key_service_keys_included(team):
    body = session_client(team.users["admin"]).get(
        f"/api/orgs/{team.organization.pk}/keys").json()

    assert body["count"] == 6
    [service] = [key for key in body["results"] if key["service"]]
    assert service["prefix"] == team.keys["service"].prefix


def test_a_new_key_carries_its_secret_once_and_no_cache_keeps_it(team, client_for):
    response = client_for(team.users["member"]).post(
        f"/api/orgs/{team.organization.pk}/keys", {"name": "cli"}, format="json")

    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["secret"].startswith(body["prefix"])
    assert (body["service"], body["owner_email"]) == (False, "member@example.com")


def test_a_member_asking_for_a_service_key_is_refused_with_the_reason(team):
    response = session_client(team.users["member"]).post(
        f"/api/orgs/{team.organization.pk}/keys", {"service": True}, format="json")

    assert response.status_code == 403
    assert "does not allow" in response.json()["error"]["message"]


def test_an_admin_sets_caps_in_usd_strings(team, client_for):
    target = team.users["target"]
    response = client_for(team.users["admin"]).put(
        f"/api/orgs/{team.organization.pk}/budgets/{target.pk}",
        {"lifetime_cap_usd": "100.5", "monthly_cap_usd": None}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["lifetime_cap_micros"], body["lifetime_cap_usd"], body["monthly_cap_usd"]) == (
        100_500_000, "100.500000", None)
    budget = MemberBudget.objects.get(organization=team.organization, user=target)
    assert budget.lifetime_limit_micros == 100_500_000


@pytest.mark.parametrize("cap", [12.5, "0.0000001", "-1"])
def test_a_cap_that_is_not_exact_money_is_refused(team, cap):
    response = session_client(team.users["admin"]).put(
        f"/api/orgs/{team.organization.pk}/budgets/{team.users['target'].pk}",
        {"lifetime_cap_usd": cap, "monthly_cap_usd": None}, format="json")

    assert response.status_code == 400
    assert "lifetime_cap_usd" in response.json()["error"]["fields"]


def test_a_member_reads_only_their_own_budget(team):
    MemberBudget.objects.filter(user=team.users["member"]).update(spent_micros=7)
    body = session_client(team.users["member"]).get(
        f"/api/orgs/{team.organization.pk}/budgets").json()

    assert [(row["email"], row["spent_micros"]) for row in body] == [("member@example.com", 7)]
