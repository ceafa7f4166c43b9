"""Reads of organizations: which ones a user belongs to and as what, their members, open
invitations and keys, and what a role lets its holder see.

The portal and the API reach every organization object through these, scoped by the
caller's membership: an organization the caller is not in, or an object of another
organization, comes back as None (or is not in the set), and is answered 404 exactly like
one that never existed, so that nobody can probe what exists.
"""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ApiKey, User
from organizations.models import Invitation, Membership, Organization, Role
from organizations.roles import Action, may

# The order members are listed in: who answers for the organization first.
ROLE_ORDER = {Role.OWNER: 0, Role.ADMIN: 1, Role.BILLING: 2, Role.MEMBER: 3}


def memberships_of(*, user: User) -> QuerySet[Membership]:
    """The user's memberships of live organizations, by organization name."""
    return (Membership.objects.filter(user=user, organization__deleted_at__isnull=True)
            .select_related("organization").order_by("organization__name",
                                                      "organization_id"))


def membership_in(*, user: User, organization_id: int) -> Membership | None:
    """The user's membership of a live organization, or None: not a member, deleted, or
    no such organization, which callers do not tell apart."""
    return memberships_of(user=user).filter(organization_id=organization_id).first()


def members_of(*, organization: Organization) -> list[Membership]:
    """Every member, owners first, then by email."""
    members = Membership.objects.filter(organization=organization).select_related("user")
    return sorted(members, key=lambda m: (ROLE_ORDER.get(m.role, 9), m.user.email))


def members_count_of(*, organization: Organization) -> int:
    return Membership.objects.filter(organization=organization).count()


def member_in(*, organization: Organization, user_id: int) -> Membership | None:
    return (Membership.objects.filter(organization=organization, user_id=user_id)
            .select_related("user").first())


def invitations_open_of(*, organization: Organization) -> QuerySet[Invitation]:
    """Invitations neither accepted nor revoked, newest first (expired ones included: the
    page says so, and revoking one lets the address be invited again)."""
    return (Invitation.objects.filter(organization=organization, accepted_at__isnull=True,
                                      revoked_at__isnull=True)
            .select_related("invited_by").order_by("-created_at", "-pk"))


def invitation_in(*, organization: Organization, invitation_id: int) -> Invitation | None:
    return (Invitation.objects.filter(organization=organization, pk=invitation_id)
            .select_related("organization").first())


def organization_keys_of(*, organization: Organization, user: User,
                         role: str) -> QuerySet[ApiKey]:
    """The organization's keys the user may see: every one (service keys included) for
    roles that manage keys, otherwise only the user's own. Newest first."""
    keys = (ApiKey.objects.filter(organization=organization, playground=False)
            .select_related("user", "budget").order_by("-created_at", "-pk"))
    if may(role, Action.MANAGE_KEYS):
        return keys
    return keys.filter(user=user, service=False)


def organization_key_in(*, organization: Organization, key_id: int) -> ApiKey | None:
    """A key of the organization, whoever owns it (None: not one of its keys)."""
    return (ApiKey.objects.filter(organization=organization, pk=key_id, playground=False)
            .select_related("user", "budget").first())


def key_is_own(*, api_key: ApiKey, user: User) -> bool:
    """A member's own key, which they manage whatever their role (a service key is
    nobody's own: admins manage those)."""
    return api_key.user_id == user.pk and not api_key.service


def billing_organization_ids(*, user: User) -> QuerySet[Membership]:
    """The live organizations whose billing ``user`` may see and act on (receipts, billing
    details, card top-ups, auto top-up, statements), by the role table: ids, as a subquery
    for ``organization_id__in``. Billing reads its access rule from here
    (``billing.selectors.receipts``), so which roles those are is said once, in roles.py."""
    return (Membership.objects.filter(user=user, role__in=_roles_that(Action.BILLING),
                                      organization__deleted_at__isnull=True)
            .values("organization_id"))


def billing_contacts_of(*, organization_id: int) -> list[str]:
    """The addresses that answer for an organization's money: its members whose role may
    see its billing (owners and billing members), owners first. Empty once it is deleted
    (its memberships go with it)."""
    members = (Membership.objects.filter(organization_id=organization_id,
                                         role__in=_roles_that(Action.BILLING),
                                         organization__deleted_at__isnull=True)
               .exclude(user__email="").values_list("role", "user__email"))
    return [email for _, email in sorted(members, key=lambda m: (ROLE_ORDER.get(m[0], 9),
                                                                 m[1]))]


def _roles_that(action: Action) -> list[str]:
    return [role for role in Role.values if may(role, action)]


def sees_all_usage(role: str | None) -> bool:
    """Whether the role sees every member's usage and budget, or only its holder's own."""
    return may(role, Action.VIEW_ALL_USAGE) or may(role, Action.MANAGE_BUDGETS)


def usage_scope(*, role: str, user: User) -> User | None:
    """Whose usage a member may read: None (everyone's) or themselves."""
    return None if sees_all_usage(role) else user
