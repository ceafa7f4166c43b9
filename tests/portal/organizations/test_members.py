"""Members and roles in the portal: each action does what it says, is offered only to the
roles allowed, and the organization keeps an owner."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from accounts.models import ApiKey
from organizations.models import Membership, Organization, Role
from organizations.services import role_of
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def _members_page(team, role: str) -> str:
    return signed_in(team.users[role]).get(
        f"/orgs/{team.organization.pk}/members/").content.decode()


def test_an_admin_changes_a_members_role(team):
    target = team.users["target"]
    signed_in(team.users["admin"]).post(
        f"/orgs/{team.organization.pk}/members/{target.pk}/role/",
        {f"m{target.pk}-role": "billing"})

    assert role_of(organization=team.organization, user=target) == Role.BILLING


def test_only_owners_are_offered_the_owner_role_and_owner_actions(team):
    owner_page, admin_page = _members_page(team, "owner"), _members_page(team, "admin")

    assert '<option value="owner"' in owner_page
    assert 'data-testid="owner-actions"' in owner_page
    assert '<option value="owner"' not in admin_page
    assert 'data-testid="owner-actions"' not in admin_page
    assert "Remove owner@example.com" not in admin_page  # an admin cannot remove an owner


@pytest.mark.parametrize("role", ["billing", "member"])
def test_roles_that_do_not_manage_members_see_no_controls_but_leave(role, team):
    page = _members_page(team, role)

    assert "/role/" not in page
    assert "/remove/" not in page
    assert f'action="/orgs/{team.organization.pk}/leave/"' in page


def test_removing_a_member_revokes_their_keys_here(team):
    target = team.users["target"]
    signed_in(team.users["admin"]).post(
        f"/orgs/{team.organization.pk}/members/{target.pk}/remove/")

    assert role_of(organization=team.organization, user=target) is None
    assert ApiKey.objects.get(pk=team.keys["target"].pk).revoked_at is not None


def test_a_member_leaves_and_lands_on_their_dashboard(team):
    response = signed_in(team.users["member"]).post(f"/orgs/{team.organization.pk}/leave/")

    assert response["Location"] == "/"
    assert role_of(organization=team.organization, user=team.users["member"]) is None


def test_the_last_owner_cannot_leave_and_is_told_why(team):
    response = signed_in(team.users["owner"]).post(f"/orgs/{team.organization.pk}/leave/")

    assert response["Location"] == f"/orgs/{team.organization.pk}/members/"
    [message] = get_messages(response.wsgi_request)
    assert "keeps at least one owner" in str(message)
    assert role_of(organization=team.organization, user=team.users["owner"]) == Role.OWNER


def test_an_owner_transfers_ownership_and_becomes_an_admin(team):
    owner, target = team.users["owner"], team.users["target"]
    signed_in(owner).post(f"/orgs/{team.organization.pk}/transfer/", {"user": target.pk})

    assert role_of(organization=team.organization, user=target) == Role.OWNER
    assert role_of(organization=team.organization, user=owner) == Role.ADMIN


def test_deleting_takes_the_organizations_name(team):
    client = signed_in(team.users["owner"])

    wrong = client.post(f"/orgs/{team.organization.pk}/delete/", {"confirm": "acme"})
    assert wrong.status_code == 400
    assert "not the organization&#x27;s name" in wrong.content.decode()
    assert Organization.objects.get(pk=team.organization.pk).deleted_at is None

    client.post(f"/orgs/{team.organization.pk}/delete/", {"confirm": "Acme"})

    assert Organization.objects.get(pk=team.organization.pk).deleted_at is not None
    assert not Membership.objects.filter(organization=team.organization).exists()
    assert client.get(f"/orgs/{team.organization.pk}/").status_code == 404
