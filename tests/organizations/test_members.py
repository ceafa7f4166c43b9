"""Members, roles and invitations: who may do what, single-use expiring links, and an
organization that always keeps an owner."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core import signing
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import user_create
from billing.models import MemberBudget, Wallet
from organizations.errors import InvitationInvalid, LastOwner, NotAllowed, OrganizationError
from organizations.models import Invitation, Membership, Role
from organizations.services import (
    INVITATION_SALT,
    invitation_accept,
    invitation_create,
    member_budget_update,
    membership_remove,
    membership_role_set,
    organization_create,
    organization_delete,
    organization_key_create,
    organization_key_revoke,
    ownership_transfer,
    role_of,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    owner = user_create(email="owner@example.com")
    organization = organization_create(name="Acme", owner=owner)
    members = {"owner": owner}
    for role in (Role.ADMIN, Role.BILLING, Role.MEMBER):
        user = user_create(email=f"{role}@example.com")
        _, token = invitation_create(organization=organization, actor=owner,
                                     email=user.email, role=role)
        invitation_accept(token=token, user=user)
        members[role] = user
    return organization, members


def test_an_organization_starts_with_its_owner_an_empty_wallet_and_a_budget_per_member(org):
    organization, members = org
    assert Wallet.objects.get(organization=organization).posted_micros == 0
    assert role_of(organization=organization, user=members["owner"]) == Role.OWNER
    assert MemberBudget.objects.filter(organization=organization).count() == 4


def test_invitation_links_are_single_use_expiring_and_for_their_address(org):
    organization, members = org
    invitee = user_create(email="new@example.com")
    stranger = user_create(email="stranger@example.com")
    _, token = invitation_create(organization=organization, actor=members["admin"],
                                 email="NEW@example.com")

    with pytest.raises(InvitationInvalid, match=r"sent to new@example\.com"):
        invitation_accept(token=token, user=stranger)
    invitation_accept(token=token, user=invitee)
    with pytest.raises(InvitationInvalid, match="already been used"):
        invitation_accept(token=token, user=invitee)

    _, late = invitation_create(organization=organization, actor=members["owner"],
                                email="late@example.com")
    Invitation.objects.filter(email="late@example.com").update(
        expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(InvitationInvalid, match="expired"):
        invitation_accept(token=late, user=user_create(email="late@example.com"))
    forged = signing.dumps({"i": 1}, salt="another salt")
    with pytest.raises(InvitationInvalid, match="not valid"):
        invitation_accept(token=forged, user=invitee)
    assert INVITATION_SALT not in token  # the link names the invitation, not the salt


@pytest.mark.parametrize(("role", "may_invite"), [
    ("owner", True), ("admin", True), ("billing", False), ("member", False)])
def test_who_may_invite(org, role, may_invite):
    organization, members = org
    if may_invite:
        invitation_create(organization=organization, actor=members[role], email="x@example.com")
    else:
        with pytest.raises(NotAllowed):
            invitation_create(organization=organization, actor=members[role],
                              email="x@example.com")


def test_only_an_owner_makes_or_unmakes_owners_and_the_last_one_stays(org):
    organization, members = org
    with pytest.raises(NotAllowed):
        membership_role_set(organization=organization, actor=members["admin"],
                            user=members["member"], role=Role.OWNER)
    with pytest.raises(LastOwner):
        membership_role_set(organization=organization, actor=members["owner"],
                            user=members["owner"], role=Role.ADMIN)
    with pytest.raises(LastOwner):
        membership_remove(organization=organization, actor=members["owner"],
                          user=members["owner"])
    ownership_transfer(organization=organization, actor=members["owner"],
                       to=members["member"])
    assert role_of(organization=organization, user=members["member"]) == Role.OWNER
    assert role_of(organization=organization, user=members["owner"]) == Role.ADMIN


@pytest.mark.django_db(transaction=True)
def test_two_owners_leaving_at_once_leave_one_owner():
    first, second = user_create(email="a@example.com"), user_create(email="b@example.com")
    organization = organization_create(name="Duo", owner=first)
    _, token = invitation_create(organization=organization, actor=first,
                                 email=second.email, role=Role.OWNER)
    invitation_accept(token=token, user=second)
    start, results = threading.Barrier(2), []

    def leave(user) -> None:
        start.wait()
        try:
            membership_remove(organization=organization, actor=user, user=user)
            results.append("left")
        except LastOwner:
            results.append("refused")

    threads = [threading.Thread(target=leave, args=(u,)) for u in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["left", "refused"]
    assert Membership.objects.filter(organization=organization, role=Role.OWNER).count() == 1


def test_keys_members_own_and_service_keys_admins_make(org):
    organization, members = org
    own = organization_key_create(organization=organization, actor=members["member"]).api_key
    assert (own.organization_id, own.user_id, own.service) == (
        organization.pk, members["member"].pk, False)
    with pytest.raises(NotAllowed):
        organization_key_create(organization=organization, actor=members["member"],
                                service=True)
    service = organization_key_create(organization=organization, actor=members["admin"],
                                      service=True).api_key
    assert service.service
    with pytest.raises(NotAllowed):  # a member may not revoke another's key
        organization_key_revoke(organization=organization, actor=members["member"],
                                api_key=service)
    organization_key_revoke(organization=organization, actor=members["member"], api_key=own)
    organization_key_revoke(organization=organization, actor=members["admin"],
                            api_key=service)
    assert ApiKey.objects.filter(organization=organization, revoked_at=None).count() == 0


def test_removing_a_member_revokes_their_keys_in_the_organization_only(org):
    organization, members = org
    key = organization_key_create(organization=organization, actor=members["member"]).api_key
    membership_remove(organization=organization, actor=members["admin"],
                      user=members["member"])
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert role_of(organization=organization, user=members["member"]) is None


def test_budgets_are_set_by_admins_and_not_below_what_was_spent(org):
    organization, members = org
    for role in ("billing", "member"):
        with pytest.raises(NotAllowed):
            member_budget_update(organization=organization, actor=members[role],
                                 user=members["member"], lifetime_limit_micros=5,
                                 monthly_limit_micros=None)
    MemberBudget.objects.filter(user=members["member"]).update(spent_micros=10)
    with pytest.raises(Exception, match="below what the member has already spent"):
        member_budget_update(organization=organization, actor=members["admin"],
                             user=members["member"], lifetime_limit_micros=5,
                             monthly_limit_micros=None)
    member_budget_update(organization=organization, actor=members["admin"],
                         user=members["member"], lifetime_limit_micros=10,
                         monthly_limit_micros=3_000)


def test_deleting_revokes_every_key_and_keeps_the_money(org):
    organization, members = org
    key = organization_key_create(organization=organization, actor=members["member"]).api_key
    with pytest.raises(NotAllowed):
        organization_delete(organization=organization, actor=members["admin"])
    organization_delete(organization=organization, actor=members["owner"])
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert not Membership.objects.filter(organization=organization).exists()
    assert Wallet.objects.filter(organization=organization).exists()
    with pytest.raises(OrganizationError):
        invitation_create(organization=organization, actor=members["owner"],
                          email="z@example.com")
