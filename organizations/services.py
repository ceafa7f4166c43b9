"""Changes to organizations: creating one (with its wallet), members and roles, invitations,
keys, budgets and deletion. Each is one transaction; each checks the actor's role first.

Membership changes lock the organization's row first: two owners leaving at once, or an
owner demoting the other while being removed, queue on it, so "at least one owner" holds
whatever runs concurrently (``tests/organizations/test_owners.py``).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import CreatedApiKey, api_key_create, api_key_revoke
from audit.actors import Actor
from audit.services import audit_record
from billing.models import LedgerEntry, Wallet
from billing.services.budgets import member_budget_open, member_budget_set
from billing.services.vouchers import voucher_redeem
from organizations.errors import InvitationInvalid, LastOwner, NotAllowed, OrganizationError
from organizations.models import Invitation, Membership, Organization, Role
from organizations.roles import Action, may

INVITATION_SALT = "organizations.invitation"


def _actor(user: User) -> Actor:
    return Actor(user=user, label=user.email)


def role_of(*, organization: Organization, user: User) -> str | None:
    """The user's role in a live organization, or None when they are not a member."""
    if organization.deleted_at is not None:
        return None
    return (Membership.objects.filter(organization=organization, user=user)
            .values_list("role", flat=True).first())


def _require(organization: Organization, user: User, action: Action) -> str:
    role = role_of(organization=organization, user=user)
    if not may(role, action):
        raise NotAllowed("Your role in this organization does not allow this.")
    assert role is not None
    return role


def _locked(organization: Organization) -> Organization:
    return Organization.objects.select_for_update().get(pk=organization.pk)


def organization_create(*, name: str, owner: User) -> Organization:
    """An organization with ``owner`` as its first owner and an empty wallet."""
    name = name.strip()
    if not name or len(name) > 150:
        raise OrganizationError("An organization needs a name of 1 to 150 characters.")
    with transaction.atomic():
        organization = Organization.objects.create(name=name)
        Wallet.objects.create(organization=organization)
        _member_add(organization, owner, Role.OWNER)
        audit_record(actor=_actor(owner), action="organization.create", obj=organization,
                     before=None, after={"name": name})
    return organization


def _member_add(organization: Organization, user: User, role: str) -> Membership:
    membership = Membership.objects.create(organization=organization, user=user, role=role)
    member_budget_open(organization_id=organization.pk, user_id=user.pk)
    return membership


# --- invitations ---

def invitation_create(*, organization: Organization, actor: User, email: str,
                      role: str = Role.MEMBER) -> tuple[Invitation, str]:
    """Invite ``email`` with ``role``; returns the invitation and the token of its link
    (signed, naming the invitation; valid ``ROUTER_INVITATION_DAYS``, once)."""
    actor_role = _require(organization, actor, Action.MANAGE_MEMBERS)
    if role not in Role.values:
        raise OrganizationError(f"{role!r} is not a role.")
    if role == Role.OWNER and actor_role != Role.OWNER:
        raise NotAllowed("Only an owner can invite an owner.")
    email = User.objects.normalize_email(email.strip()).lower()
    if Membership.objects.filter(organization=organization, user__email=email).exists():
        raise OrganizationError(f"{email} is already a member.")
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization=organization, email=email, role=role, invited_by=actor,
                expires_at=timezone.now() + timedelta(days=settings.ROUTER_INVITATION_DAYS))
            audit_record(actor=_actor(actor), action="invitation.create", obj=invitation,
                         before=None, after={"email": email, "role": role})
    except IntegrityError:
        raise OrganizationError(f"{email} already has an open invitation.") from None
    return invitation, signing.dumps({"i": invitation.pk}, salt=INVITATION_SALT)


def invitation_of_token(token: str) -> Invitation:
    """The open invitation a link names, or InvitationInvalid saying why not."""
    try:
        data = signing.loads(token, salt=INVITATION_SALT)
    except signing.BadSignature:
        raise InvitationInvalid("This invitation link is not valid.") from None
    invitation = (Invitation.objects.select_related("organization")
                  .filter(pk=data.get("i") if isinstance(data, dict) else None).first())
    if invitation is None or invitation.revoked_at is not None:
        raise InvitationInvalid("This invitation was withdrawn.")
    if invitation.accepted_at is not None:
        raise InvitationInvalid("This invitation has already been used.")
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid("This invitation has expired; ask for a new one.")
    if invitation.organization.deleted_at is not None:
        raise InvitationInvalid("This organization no longer exists.")
    return invitation


def invitation_accept(*, token: str, user: User) -> Membership:
    """Join the organization the link invites to, as the address it was sent to: single
    use (the row is locked and marked used in the same transaction)."""
    with transaction.atomic():
        invitation = invitation_of_token(token)
        invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if invitation.accepted_at is not None:
            raise InvitationInvalid("This invitation has already been used.")
        if invitation.email.lower() != user.email.lower():
            raise InvitationInvalid(f"This invitation was sent to {invitation.email}; "
                                    "sign in with that address to accept it.")
        organization = _locked(invitation.organization)
        if Membership.objects.filter(organization=organization, user=user).exists():
            raise InvitationInvalid("You are already a member of this organization.")
        membership = _member_add(organization, user, invitation.role)
        invitation.accepted_at, invitation.accepted_by = timezone.now(), user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        audit_record(actor=_actor(user), action="invitation.accept", obj=invitation,
                     before=None, after={"role": invitation.role})
        return membership


def invitation_revoke(*, invitation: Invitation, actor: User) -> None:
    _require(invitation.organization, actor, Action.MANAGE_MEMBERS)
    Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True,
                              revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- members and roles ---

def _owners_left(organization: Organization, *, without: User) -> int:
    return (Membership.objects.filter(organization=organization, role=Role.OWNER)
            .exclude(user=without).count())


def membership_role_set(*, organization: Organization, actor: User, user: User,
                        role: str) -> Membership:
    """Change a member's role. Admins manage admins, billing and members; making or
    unmaking an owner is an owner's; the last owner stays one."""
    if role not in Role.values:
        raise OrganizationError(f"{role!r} is not a role.")
    with transaction.atomic():
        organization = _locked(organization)
        actor_role = _require(organization, actor, Action.MANAGE_MEMBERS)
        membership = Membership.objects.select_for_update().filter(
            organization=organization, user=user).first()
        if membership is None:
            raise OrganizationError(f"{user.email} is not a member.")
        if Role.OWNER in (role, membership.role) and actor_role != Role.OWNER:
            raise NotAllowed("Only an owner can make or unmake an owner.")
        if (membership.role == Role.OWNER and role != Role.OWNER
                and not _owners_left(organization, without=user)):
            raise LastOwner("An organization keeps at least one owner: make another "
                            "member an owner first.")
        before = {"role": membership.role}
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(actor=_actor(actor), action="membership.role", obj=membership,
                     before=before, after={"role": role})
        return membership


def membership_remove(*, organization: Organization, actor: User, user: User) -> None:
    """Remove a member (or leave, when ``actor`` is ``user``): their keys in the
    organization are revoked; the last owner cannot go."""
    with transaction.atomic():
        organization = _locked(organization)
        actor_role = role_of(organization=organization, user=actor)
        membership = Membership.objects.select_for_update().filter(
            organization=organization, user=user).first()
        if membership is None or actor_role is None:
            raise NotAllowed("Not a member of this organization.")
        if actor != user:
            if not may(actor_role, Action.MANAGE_MEMBERS):
                raise NotAllowed("Your role in this organization does not allow this.")
            if membership.role == Role.OWNER and actor_role != Role.OWNER:
                raise NotAllowed("Only an owner can remove an owner.")
        if membership.role == Role.OWNER and not _owners_left(organization, without=user):
            raise LastOwner("An organization keeps at least one owner: make another member "
                            "an owner first, or delete the organization.")
        for prefix in ApiKey.objects.filter(organization=organization, user=user,
                                            revoked_at__isnull=True, service=False
                                            ).values_list("prefix", flat=True):
            api_key_revoke(prefix=prefix, actor=_actor(actor))
        membership.delete()
        audit_record(actor=_actor(actor), action="membership.remove", obj=organization,
                     before={"member": user.email}, after=None)


def ownership_transfer(*, organization: Organization, actor: User, to: User) -> None:
    """Make ``to`` (a member) an owner and the acting owner an admin."""
    with transaction.atomic():
        organization = _locked(organization)
        _require(organization, actor, Action.OWN)
        target = Membership.objects.select_for_update().filter(
            organization=organization, user=to).first()
        if target is None:
            raise OrganizationError(f"{to.email} is not a member.")
        target.role = Role.OWNER
        target.save(update_fields=["role"])
        if actor != to:
            Membership.objects.filter(organization=organization, user=actor).update(
                role=Role.ADMIN)
        audit_record(actor=_actor(actor), action="organization.transfer", obj=organization,
                     before={"owner": actor.email}, after={"owner": to.email})


def organization_delete(*, organization: Organization, actor: User) -> None:
    """An owner deletes the organization: every key is revoked and every member removed;
    the wallet and its ledger stay (money is never deleted), so a balance left is kept for
    the books and for staff to refund."""
    with transaction.atomic():
        organization = _locked(organization)
        _require(organization, actor, Action.OWN)
        for prefix in ApiKey.objects.filter(organization=organization,
                                            revoked_at__isnull=True
                                            ).values_list("prefix", flat=True):
            api_key_revoke(prefix=prefix, actor=_actor(actor))
        Membership.objects.filter(organization=organization).delete()
        Invitation.objects.filter(organization=organization, accepted_at__isnull=True,
                                  revoked_at__isnull=True).update(revoked_at=timezone.now())
        organization.deleted_at = timezone.now()
        organization.save(update_fields=["deleted_at"])
        audit_record(actor=_actor(actor), action="organization.delete", obj=organization,
                     before={"name": organization.name}, after=None)


# --- keys and budgets ---

def organization_key_create(*, organization: Organization, actor: User, name: str = "",
                            service: bool = False) -> CreatedApiKey:
    """A key spending the organization's wallet: a member's own (their budget applies), or,
    by an admin, a service key (no member's budget)."""
    _require(organization, actor, Action.MANAGE_KEYS if service else Action.VIEW)
    return api_key_create(user=actor, name=name, organization_id=organization.pk,
                          service=service, actor=_actor(actor))


def organization_key_revoke(*, organization: Organization, actor: User,
                            api_key: ApiKey) -> None:
    """A member revokes their own key; admins any of the organization's."""
    if api_key.organization_id != organization.pk:
        raise NotAllowed("Not a key of this organization.")
    own = api_key.user_id == actor.pk and not api_key.service
    _require(organization, actor, Action.VIEW if own else Action.MANAGE_KEYS)
    api_key_revoke(prefix=api_key.prefix, actor=_actor(actor))


def member_budget_update(*, organization: Organization, actor: User, user: User,
                         lifetime_limit_micros: int | None,
                         monthly_limit_micros: int | None) -> None:
    """An admin sets a member's caps in the organization."""
    _require(organization, actor, Action.MANAGE_BUDGETS)
    if role_of(organization=organization, user=user) is None:
        raise OrganizationError(f"{user.email} is not a member.")
    member_budget_set(organization_id=organization.pk, user_id=user.pk,
                      lifetime_limit_micros=lifetime_limit_micros,
                      monthly_limit_micros=monthly_limit_micros, actor=_actor(actor))


# --- money ---

def organization_voucher_redeem(*, organization: Organization, actor: User,
                                code: str) -> LedgerEntry:
    """A billing member or an owner redeems a voucher into the organization's wallet (the
    voucher records them as its redeemer)."""
    _require(organization, actor, Action.BILLING)
    with transaction.atomic():
        wallet = Wallet.objects.get(organization=organization)
        entry = voucher_redeem(user=actor, code=code, wallet=wallet)
        audit_record(actor=_actor(actor), action="organization.voucher", obj=organization,
                     before=None, after={"amount_micros": entry.amount_micros,
                                         "ledger_entry": entry.pk})
    return entry
