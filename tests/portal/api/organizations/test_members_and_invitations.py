"""Members and invitations through /api/orgs: roles change as asked, an organization keeps
an owner, and invitations go by email only."""

from __future__ import annotations

import pytest
from django.core import mail

from accounts.models import ApiKey
from organizations.models import Invitation, Role
from organizations.services import role_of
from tests.portal.api.conftest import session_client

pytestmark = pytest.mark.django_db


def test_an_admin_changes_a_role_and_the_answer_says_the_new_one(team, client_for):
    target = team.users["target"]
    response = client_for(team.users["admin"]).patch(
        f"/api/orgs/{team.organization.pk}/members/{target.pk}", {"role": "admin"},
        format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert role_of(organization=team.organization, user=target) == Role.ADMIN


def test_an_admin_cannot_make_an_owner_and_is_told_why(team):
    response = session_client(team.users["admin"]).patch(
        f"/api/orgs/{team.organization.pk}/members/{team.users['target'].pk}",
        {"role": "owner"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Only an owner can make or unmake an owner."


def test_the_last_owner_cannot_leave(team):
    owner = team.users["owner"]
    response = session_client(owner).delete(
        f"/api/orgs/{team.organization.pk}/members/{owner.pk}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "last_owner"
    assert role_of(organization=team.organization, user=owner) == Role.OWNER


def test_removing_a_member_revokes_their_keys(team):
    target = team.users["target"]
    session_client(team.users["owner"]).delete(
        f"/api/orgs/{team.organization.pk}/members/{target.pk}")

    assert ApiKey.objects.get(pk=team.keys["target"].pk).revoked_at is not None


def test_an_invitation_goes_by_email_and_its_link_is_not_in_the_answer(team, client_for):
    response = client_for(team.users["admin"]).post(
        f"/api/orgs/{team.organization.pk}/invitations",
        {"email": "Someone@Example.com", "role": "billing"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["email"], body["role"], body["email_sent"]) == (
        "someone@example.com", "billing", True)
    assert "/invitations/" in mail.outbox[-1].body
    assert "/invitations/" not in response.content.decode()
    assert "token" not in body


def test_an_invitation_whose_email_cannot_be_sent_says_so(team, settings):
    settings.EMAIL_BACKEND = "router_admin.mail.UnconfiguredEmailBackend"
    response = session_client(team.users["admin"]).post(
        f"/api/orgs/{team.organization.pk}/invitations", {"email": "x@example.com"},
        format="json")

    assert response.status_code == 201
    assert response.json()["email_sent"] is False


def test_inviting_an_address_twice_is_refused(team):
    client = session_client(team.users["admin"])
    response = client.post(f"/api/orgs/{team.organization.pk}/invitations",
                           {"email": "invitee@example.com"}, format="json")

    assert response.status_code == 400
    assert "already has an open invitation" in response.json()["error"]["message"]


def test_the_open_invitations_are_listed_and_revoked(team):
    client = session_client(team.users["owner"])
    path = f"/api/orgs/{team.organization.pk}/invitations"

    [listed] = client.get(path).json()
    assert (listed["email"], listed["expired"], listed["invited_by"]) == (
        "invitee@example.com", False, "owner@example.com")
    assert client.delete(f"{path}/{listed['id']}").status_code == 204
    assert client.get(path).json() == []
    assert Invitation.objects.get(pk=listed["id"]).revoked_at is not None
