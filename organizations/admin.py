"""Staff's view of organizations: members and invitations inline, and the organization's
money and traffic (``organizations.figures``) above its form. Membership changes go through
the services when members do them; staff edit roles here directly only to rescue an
organization (a database CHECK keeps roles known)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse

from organizations.figures import organization_figures
from organizations.models import Invitation, Membership, Organization
from router_admin.admin_display import usd_cell, when


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("user",)


class InvitationInline(admin.TabularInline):
    model = Invitation
    extra = 0
    fields = ("email", "role", "invited_by", "created_at", "expires_at", "accepted_at",
              "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # invitations carry a signed link: members send them from the portal


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "members", "balance", "created", "deleted")
    search_fields = ("name", "memberships__user__email")
    list_filter = ("deleted_at",)
    inlines = (MembershipInline, InvitationInline)
    readonly_fields = ("created_at", "deleted_at")
    change_form_template = "admin/organizations/organization/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return (super().get_queryset(request).select_related("wallet")
                .annotate(member_count=Count("memberships")))

    @admin.display(description="Members", ordering="member_count")
    def members(self, obj: Organization) -> int:
        return obj.member_count  # type: ignore[attr-defined]

    @admin.display(description="Balance (USD)", ordering="wallet__posted_micros")
    def balance(self, obj: Organization) -> Any:
        wallet = getattr(obj, "wallet", None)
        return usd_cell(wallet.posted_micros if wallet else None)

    @admin.display(description="Created (UTC)", ordering="created_at")
    def created(self, obj: Organization) -> Any:
        return when(obj.created_at)

    @admin.display(description="Deleted (UTC)", ordering="deleted_at")
    def deleted(self, obj: Organization) -> Any:
        return when(obj.deleted_at) if obj.deleted_at else ""

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = dict(extra_context or {})
        organization = self.get_object(request, unquote(object_id))
        if organization is not None and request.user.has_perm("billing.view_wallet"):
            context["figures"] = organization_figures(organization=organization)
        return super().change_view(request, object_id, form_url, context)
