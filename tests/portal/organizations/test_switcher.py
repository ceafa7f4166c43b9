"""Creating an organization and the navigation's switcher between the personal account and
each organization the user belongs to, remembered for the session."""

from __future__ import annotations

import re

import pytest

from organizations.models import Membership, Role
from portal.views.organizations.access import SESSION_KEY
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def _options(page: str) -> dict[str, str]:
    switcher = page[page.index('data-testid="account-switcher"'):]
    switcher = switcher[:switcher.index("</form>")]
    return dict(re.findall(r'<option value="(\d*)"[^>]*>([^<]+)</option>', switcher))


def test_creating_an_organization_makes_its_creator_the_owner_and_opens_it(member_client,
                                                                          member):
    response = member_client.post("/orgs/new/", {"name": "  Widgets Inc  "})

    membership = Membership.objects.get(user=member)
    assert (membership.organization.name, membership.role) == ("Widgets Inc", Role.OWNER)
    assert response["Location"] == f"/orgs/{membership.organization_id}/"
    assert member_client.session[SESSION_KEY] == membership.organization_id


def test_an_organization_needs_a_name(member_client):
    response = member_client.post("/orgs/new/", {"name": "   "})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not Membership.objects.exists()


def test_the_switcher_lists_the_personal_account_and_only_the_users_organizations(team):
    page = signed_in(team.users["member"]).get("/").content.decode()

    assert _options(page) == {"": "Personal", str(team.organization.pk): "Acme"}
    assert 'for="account-switcher">Account</label>' in page  # a label tied to the select


def test_switching_remembers_the_choice_for_the_next_pages(team):
    client = signed_in(team.users["member"])

    response = client.post("/orgs/switch/", {"account": str(team.organization.pk)})

    assert response["Location"] == f"/orgs/{team.organization.pk}/"
    page = client.get("/keys/").content.decode()  # a personal page: the choice is kept
    assert f'<option value="{team.organization.pk}" selected>Acme</option>' in page
    assert 'data-testid="current-organization">Acme</a>' in page

    response = client.post("/orgs/switch/", {"account": ""})

    assert response["Location"] == "/"
    assert SESSION_KEY not in client.session
    assert '<option value="" selected>Personal</option>' in client.get("/").content.decode()


def test_switching_to_an_organization_one_is_not_in_is_a_404(team):
    client = signed_in(team.users["member"])

    assert client.post("/orgs/switch/", {"account": str(team.other.pk)}).status_code == 404
    assert client.post("/orgs/switch/", {"account": "x"}).status_code == 404
    assert SESSION_KEY not in client.session


def test_opening_an_organization_page_selects_it(team):
    client = signed_in(team.users["admin"])

    client.get(f"/orgs/{team.organization.pk}/usage/")

    assert client.session[SESSION_KEY] == team.organization.pk


def test_a_choice_kept_from_an_organization_since_left_shows_personal(team):
    client = signed_in(team.users["member"])
    client.post("/orgs/switch/", {"account": str(team.organization.pk)})
    client.post(f"/orgs/{team.organization.pk}/leave/")

    assert '<option value="" selected>Personal</option>' in client.get("/").content.decode()
