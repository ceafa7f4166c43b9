"""Invitations in the portal: the email with its link, and the link's page for a visitor
signed out (sign up, come back, accept), the right account, the wrong one, and links that
expired, were used, or were withdrawn."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from organizations.models import Invitation, Membership, Role
from organizations.services import invitation_create
from tests.portal.conftest import PASSWORD
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def _invite(team, email: str, role: str = Role.MEMBER) -> str:
    """Invite through the page, as an admin; the accept path from the email."""
    signed_in(team.users["admin"]).post(f"/orgs/{team.organization.pk}/invitations/",
                                        {"email": email, "role": role})
    [link] = re.findall(r"http://testserver(/invitations/\S+/)", mail.outbox[-1].body)
    return link


def test_an_invitation_is_emailed_with_its_single_use_link(team):
    link = _invite(team, "New.Person@Example.com", Role.BILLING)

    message = mail.outbox[-1]
    assert message.to == ["new.person@example.com"]
    assert "admin@example.com invited you to Acme" in message.subject
    assert "as billing" in message.body
    assert link.startswith("/invitations/")
    page = signed_in(team.users["admin"]).get(
        f"/orgs/{team.organization.pk}/invitations/").content.decode()
    assert 'data-invitation="new.person@example.com"' in page


def test_an_invitation_the_email_backend_cannot_send_says_so(team, settings):
    settings.EMAIL_BACKEND = "router_admin.mail.UnconfiguredEmailBackend"
    client = signed_in(team.users["admin"])

    response = client.post(f"/orgs/{team.organization.pk}/invitations/",
                           {"email": "x@example.com", "role": "member"}, follow=True)

    assert "its email could not be sent" in response.content.decode()
    assert Invitation.objects.filter(email="x@example.com").exists()


def test_an_admin_cannot_invite_an_owner(team):
    client = signed_in(team.users["admin"])

    page = client.get(f"/orgs/{team.organization.pk}/invitations/").content.decode()
    response = client.post(f"/orgs/{team.organization.pk}/invitations/",
                           {"email": "boss@example.com", "role": "owner"})

    assert '<option value="owner"' not in page
    assert response.status_code == 400  # not a choice the form offers an admin
    assert not Invitation.objects.filter(email="boss@example.com").exists()


def test_a_signed_out_invitee_signs_up_comes_back_and_is_a_member(team):
    link = _invite(team, "newcomer@example.com")
    visitor = Client()

    page = visitor.get(link).content.decode()
    signup = re.search(r'href="([^"]+)" data-testid="signup-to-accept"', page).group(1)
    signup = signup.replace("&amp;", "&")
    query = parse_qs(urlsplit(signup).query)
    assert query == {"next": [link], "email": ["newcomer@example.com"]}
    form = visitor.get(signup).content.decode()
    assert 'value="newcomer@example.com"' in form  # the address the invitation is for
    response = visitor.post(signup, {"email": "newcomer@example.com",
                                     "password1": PASSWORD, "password2": PASSWORD})
    assert response["Location"] == link

    response = visitor.post(link)

    membership = Membership.objects.get(user__email="newcomer@example.com")
    assert (membership.organization, membership.role) == (team.organization, Role.MEMBER)
    assert response["Location"] == f"/orgs/{team.organization.pk}/"


def test_a_signed_out_invitee_with_an_account_signs_in_and_comes_back(team, make_user):
    make_user(email="known@example.com", password=PASSWORD)
    link = _invite(team, "known@example.com")
    visitor = Client()
    page = visitor.get(link).content.decode()
    login = re.search(r'href="([^"]+)" data-testid="login-to-accept"', page).group(1)

    response = visitor.post(login.replace("&amp;", "&"),
                            {"username": "known@example.com", "password": PASSWORD})

    assert response["Location"] == link
    visitor.post(link)
    assert Membership.objects.filter(user__email="known@example.com",
                                     organization=team.organization).exists()


def test_signing_up_never_sends_anyone_to_another_site(client):
    response = client.post("/signup/?next=https://evil.example/", {
        "email": "someone@example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert response["Location"] == "/"


def test_a_reused_link_is_refused_with_a_clear_message(team, make_user):
    link = _invite(team, "once@example.com")
    invitee = signed_in(make_user(email="once@example.com"))
    invitee.post(link)

    again = invitee.post(link)
    page = invitee.get(link)

    assert again.status_code == page.status_code == 400
    assert "This invitation has already been used." in page.content.decode()


def test_an_expired_link_is_refused_with_a_clear_message(team, make_user):
    link = _invite(team, "late@example.com")
    Invitation.objects.filter(email="late@example.com").update(
        expires_at=timezone.now() - timedelta(seconds=1))
    invitee = signed_in(make_user(email="late@example.com"))

    for response in (invitee.get(link), invitee.post(link)):
        assert response.status_code == 400
        assert "This invitation has expired; ask for a new one." in response.content.decode()
    assert not Membership.objects.filter(user__email="late@example.com").exists()


def test_the_wrong_account_is_told_so_and_joins_nothing(team):
    link = _invite(team, "right@example.com")
    wrong = signed_in(team.users["outsider"])

    page = wrong.get(link).content.decode()
    response = wrong.post(link)

    assert "This invitation was sent to right@example.com, and you are signed in as " \
        "outsider@example.com." in page
    assert 'data-testid="accept"' not in page
    assert response.status_code == 400
    assert "sign in with that address to accept it" in response.content.decode()
    assert not Membership.objects.filter(user=team.users["outsider"],
                                         organization=team.organization).exists()


def test_a_withdrawn_or_forged_link_is_refused(team, make_user):
    link = _invite(team, "gone@example.com")
    invitation = Invitation.objects.get(email="gone@example.com")
    signed_in(team.users["admin"]).post(
        f"/orgs/{team.organization.pk}/invitations/{invitation.pk}/revoke/")
    invitee = signed_in(make_user(email="gone@example.com"))

    assert "This invitation was withdrawn." in invitee.get(link).content.decode()
    forged = invitee.get("/invitations/not-a-token/")
    assert forged.status_code == 400
    assert "This invitation link is not valid." in forged.content.decode()


def test_the_right_account_sees_whom_it_joins_and_as_what(team, make_user):
    _, token = invitation_create(organization=team.organization, actor=team.users["owner"],
                                 email="yes@example.com", role=Role.ADMIN)
    page = signed_in(make_user(email="yes@example.com")).get(
        f"/invitations/{token}/").content.decode()

    assert "<h1>Join Acme</h1>" in page
    assert "to join as <strong>admin</strong>" in page
    assert 'data-testid="accept"' in page
    assert "(from owner@example.com)" in page
