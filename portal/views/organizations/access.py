"""Who may open an organization page, decided once for every view of this package.

An organization the signed-in user is not in (or one deleted, or that never was) is a 404,
never a 403: a 403 would tell a stranger that it exists. Inside their own organization, an
action their role does not allow is a 403 page saying so. The services check the role again
(``organizations.services``); a ``NotAllowed`` they raise is answered the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts.models import ApiKey, User
from billing.models import Wallet
from billing.selectors.receipts import wallet_of_viewer
from organizations.errors import NotAllowed
from organizations.models import Organization
from organizations.roles import Action, may
from organizations.selectors import (
    member_in,
    membership_in,
    organization_key_in,
    sees_all_usage,
)

# The account the navigation's switcher shows: an organization id, or absent (personal).
SESSION_KEY = "portal_organization_id"
FORBIDDEN = "Your role in this organization does not allow this."


@dataclass(frozen=True)
class OrgAccess:
    """The organization a page is about, and the signed-in member's role in it."""

    organization: Organization
    role: str
    user: User

    def may(self, action: Action) -> bool:
        return may(self.role, action)

    # For templates, which cannot pass an argument: what the navigation and buttons show.
    @property
    def may_manage_members(self) -> bool:
        return self.may(Action.MANAGE_MEMBERS)

    @property
    def may_manage_keys(self) -> bool:
        return self.may(Action.MANAGE_KEYS)

    @property
    def may_manage_budgets(self) -> bool:
        return self.may(Action.MANAGE_BUDGETS)

    @property
    def may_billing(self) -> bool:
        return self.may(Action.BILLING)

    @property
    def may_own(self) -> bool:
        return self.may(Action.OWN)


def org_access(*, user: User, organization_id: int) -> OrgAccess:
    """The user's access to an organization, or Http404 when they are not a member (the
    API answers it 404 too)."""
    membership = membership_in(user=user, organization_id=organization_id)
    if membership is None:
        raise Http404("No such organization.")
    return OrgAccess(organization=membership.organization, role=membership.role, user=user)


def require(access: OrgAccess, action: Action) -> None:
    if not access.may(action):
        raise NotAllowed(FORBIDDEN)


def usage_member(access: OrgAccess, member_id: int | None) -> User | None:
    """Whose requests a usage read covers: None for everyone's. A role that sees only its
    own usage asking for another member's is NotAllowed (403); a member id not in the
    organization is a 404."""
    if not sees_all_usage(access.role):
        if member_id not in (None, access.user.pk):
            raise NotAllowed("Your role shows only your own usage.")
        return access.user
    if member_id is None:
        return None
    membership = member_in(organization=access.organization, user_id=member_id)
    if membership is None:
        raise Http404("No such member.")
    return membership.user


def billing_wallet(access: OrgAccess) -> Wallet:
    """The organization's wallet for its billing pages and endpoints, through billing's one
    rule of whose billing a user may see and act on (``wallet_of_viewer``). The role was
    checked before (a 403); the rule answering None anyway is a 404, never another wallet."""
    wallet = wallet_of_viewer(user=access.user, organization_id=access.organization.pk)
    if wallet is None:
        raise Http404("No such organization.")
    return wallet


def key_in_or_404(access: OrgAccess, key_id: int) -> ApiKey:
    """A key of this organization (any member's); another organization's is a 404."""
    api_key = organization_key_in(organization=access.organization, key_id=key_id)
    if api_key is None:
        raise Http404("No such API key.")
    return api_key


def forbidden(request: HttpRequest, access: OrgAccess, message: str = FORBIDDEN
              ) -> HttpResponse:
    return render(request, "portal/organizations/forbidden.html",
                  {"access": access, "message": message}, status=403)


def remember(request: HttpRequest, organization_id: int | None) -> None:
    """Keep the switcher's choice for the next pages of this session."""
    if organization_id is None:
        request.session.pop(SESSION_KEY, None)
    else:
        request.session[SESSION_KEY] = organization_id


OrgView = Callable[..., HttpResponse]


def org_page(action: Action = Action.VIEW, methods: tuple[str, ...] = ("GET",)
             ) -> Callable[[OrgView], Callable[..., HttpResponse]]:
    """Decorate ``view(request, access, **kwargs)``: signed in, a member of the
    ``org_id`` in the URL (else 404), with a role that may ``action`` (else 403)."""

    def decorate(view: OrgView) -> Callable[..., HttpResponse]:
        @login_required
        @require_http_methods(list(methods))
        @wraps(view)
        def wrapped(request: HttpRequest, org_id: int, **kwargs: Any) -> HttpResponse:
            access = org_access(user=request.user, organization_id=org_id)
            remember(request, org_id)
            if not access.may(action):
                return forbidden(request, access)
            try:
                return view(request, access, **kwargs)
            except NotAllowed as exc:
                return forbidden(request, access, str(exc))

        return wrapped

    return decorate
