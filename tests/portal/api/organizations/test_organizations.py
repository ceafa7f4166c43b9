"""/api/orgs: the caller's organizations with their role and what it allows, creating one,
one organization's summary, and the OpenAPI schema describing them."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from organizations.models import Membership, Role
from tests.portal.api.conftest import session_client

pytestmark = pytest.mark.django_db


def test_the_list_has_only_the_callers_organizations_with_their_role(team, client_for):
    response = client_for(team.users["billing"]).get("/api/orgs")

    assert response.status_code == 200
    [org] = response.json()["results"]
    assert (org["id"], org["name"], org["role"]) == (team.organization.pk, "Acme", "billing")
    assert org["permissions"] == ["billing", "view", "view_all_usage"]


def test_creating_one_makes_the_caller_its_owner(team, client_for):
    response = client_for(team.users["member"]).post("/api/orgs", {"name": "Side project"},
                                                     format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["role"], body["members_count"]) == ("Side project", "owner", 1)
    assert body["available_usd"] == "0.000000"
    assert Membership.objects.get(organization_id=body["id"]).role == Role.OWNER


def test_fields_that_cannot_be_set_are_refused(team):
    response = session_client(team.users["member"]).post(
        "/api/orgs", {"name": "X", "balance": "100"}, format="json")

    assert response.status_code == 400
    assert "balance" in response.json()["error"]["fields"]


def test_an_organization_says_its_balance_and_members(team):
    body = session_client(team.users["member"]).get(f"/api/orgs/{team.organization.pk}").json()

    assert (body["members_count"], body["available_micros"]) == (5, 50_000_000)
    assert body["permissions"] == ["view"]


def test_an_organization_that_never_existed_and_anothers_answer_alike(team):
    client = session_client(team.users["member"])

    never = client.get("/api/orgs/999999").json()
    theirs = client.get(f"/api/orgs/{team.other.pk}").json()

    assert never == theirs  # nothing tells them apart


def test_the_schema_describes_the_organization_endpoints(db):
    document = APIClient().get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert {"/api/orgs", "/api/orgs/{org_id}", "/api/orgs/{org_id}/members/{user_id}",
            "/api/orgs/{org_id}/invitations", "/api/orgs/{org_id}/keys/{key_id}",
            "/api/orgs/{org_id}/budgets/{user_id}", "/api/orgs/{org_id}/usage",
            "/api/orgs/{org_id}/usage/members", "/api/orgs/{org_id}/ledger",
            "/api/orgs/{org_id}/vouchers/redeem"} <= set(document["paths"])
    put = document["paths"]["/api/orgs/{org_id}/budgets/{user_id}"]["put"]
    assert {"200", "400", "403", "404"} <= set(put["responses"])
