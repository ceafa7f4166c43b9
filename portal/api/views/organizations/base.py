"""What every /api/orgs view shares: the caller's access to the organization in the URL
(404 when they are not a member) and the organization services' refusals in the API's
error format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import Wallet
from organizations.errors import InvitationInvalid, LastOwner, NotAllowed, OrganizationError
from organizations.roles import Action
from portal.api.base import ApiView
from portal.api.errors import DomainError, api_exception_handler
from portal.views.organizations.access import OrgAccess, billing_wallet, org_access, require


def _as_api_exception(exc: Exception) -> Exception:
    # Only members reach a service (OrgApiView.access answers 404 first), so NotAllowed
    # here is a role's refusal inside its own organization: a 403.
    if isinstance(exc, NotAllowed):
        return exceptions.PermissionDenied(str(exc))
    if isinstance(exc, LastOwner):
        return DomainError(str(exc), status_code=400, code="last_owner")
    if isinstance(exc, InvitationInvalid):
        return DomainError(str(exc), status_code=400, code="invitation_invalid")
    if isinstance(exc, OrganizationError):
        return DomainError(str(exc), status_code=400, code="invalid_request")
    return exc


def organization_exception_handler(exc: Exception, context: dict[str, Any]
                                   ) -> Response | None:
    return api_exception_handler(_as_api_exception(exc), context)


class OrgApiView(ApiView):
    def get_exception_handler(self) -> Callable:
        return organization_exception_handler

    def access(self, request: Request, org_id: int, action: Action = Action.VIEW
               ) -> OrgAccess:
        """The caller's membership of ``org_id`` (404 if none) with a role that may
        ``action`` (403 if not)."""
        access = org_access(user=request.user, organization_id=org_id)
        require(access, action)
        return access

    def billing_access(self, request: Request, org_id: int) -> tuple[OrgAccess, Wallet]:
        """The caller's access for the organization's money (owners and billing members,
        else 403) and its wallet, by billing's one rule of whose billing one may see."""
        access = self.access(request, org_id, Action.BILLING)
        return access, billing_wallet(access)
