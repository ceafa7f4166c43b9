"""Every /api/orgs endpoint against every role: allowed, 403 inside one's own organization,
404 for anyone outside it (the table is the portal's, ``role_table``)."""

from __future__ import annotations

import pytest
from django.urls import resolve

from portal.api.views.organizations.urls import organization_api_urlpatterns
from tests.portal.api.conftest import session_client, token_client
from tests.portal.organizations.role_table import (
    API_ENDPOINTS,
    FOREIGN_API,
    OWNER,
    case_id,
    cases,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("org_stripe")]


@pytest.fixture
def team(shared_team):
    # Seeded once for the module: each case rolls back what it did.
    return shared_team


@pytest.mark.parametrize(("case", "role"), cases(API_ENDPOINTS), ids=case_id)
def test_each_endpoint_answers_each_role_as_the_table_says(team, case, role):
    path, data = case.fill(team.placeholders(role))
    client = session_client(team.users[role])

    response = getattr(client, case.method)(path, data, format="json")

    assert response.status_code == case.expected(role), response.content.decode()[:500]
    if response.status_code in (403, 404):
        error = response.json()["error"]
        assert error["type"] == ("permission_error" if response.status_code == 403
                                 else "not_found_error")
        assert error["message"]


def test_the_table_covers_every_organization_endpoint():
    named = {pattern.name for pattern in organization_api_urlpatterns} - {"orgs"}
    values = {name: 1 for name in ("org", "target", "me", "my_key", "target_key",
                                   "service_key", "invitation", "voucher", "receipt",
                                   "topup")}
    covered = {resolve(case.fill(values)[0].split("?")[0]).url_name for case in API_ENDPOINTS}
    assert named == covered


@pytest.mark.parametrize("role", ["owner", "member", "outsider"])
def test_a_management_token_is_held_to_the_same_roles(team, role):
    client = token_client(team.users[role])
    path = f"/api/orgs/{team.organization.pk}/ledger"

    assert client.get(path).status_code == {"owner": 200, "member": 403,
                                            "outsider": 404}[role]


@pytest.mark.parametrize("case", FOREIGN_API, ids=case_id)
def test_another_organizations_objects_are_404_even_to_an_owner(team, case):
    path, data = case.fill(team.placeholders(OWNER))

    response = getattr(session_client(team.users[OWNER]), case.method)(path, data,
                                                                      format="json")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
