"""The organization pages' routes, spread into ``portal.urls`` (names in its ``portal``
namespace)."""

from __future__ import annotations

from django.urls import path

from portal.views.organizations import (
    billing,
    budgets,
    invitations,
    keys,
    members,
    overview,
    usage,
)

organization_urlpatterns = [
    path("orgs/new/", overview.organization_new, name="org_new"),
    path("orgs/switch/", overview.organization_switch, name="org_switch"),
    path("orgs/<int:org_id>/", overview.organization_overview, name="org_overview"),
    path("orgs/<int:org_id>/members/", members.members, name="org_members"),
    path("orgs/<int:org_id>/members/<int:user_id>/role/", members.member_role,
         name="org_member_role"),
    path("orgs/<int:org_id>/members/<int:user_id>/remove/", members.member_remove,
         name="org_member_remove"),
    path("orgs/<int:org_id>/leave/", members.leave, name="org_leave"),
    path("orgs/<int:org_id>/transfer/", members.transfer, name="org_transfer"),
    path("orgs/<int:org_id>/delete/", members.delete, name="org_delete"),
    path("orgs/<int:org_id>/invitations/", invitations.invitations, name="org_invitations"),
    path("orgs/<int:org_id>/invitations/<int:invitation_id>/revoke/",
         invitations.invitation_withdraw, name="org_invitation_revoke"),
    path("orgs/<int:org_id>/keys/", keys.keys, name="org_keys"),
    path("orgs/<int:org_id>/keys/<int:key_id>/revoke/", keys.key_revoke,
         name="org_key_revoke"),
    path("orgs/<int:org_id>/budgets/", budgets.budgets, name="org_budgets"),
    path("orgs/<int:org_id>/budgets/<int:user_id>/", budgets.budget_edit,
         name="org_budget_edit"),
    path("orgs/<int:org_id>/usage/", usage.usage, name="org_usage"),
    path("orgs/<int:org_id>/usage.csv", usage.usage_csv, name="org_usage_csv"),
    path("orgs/<int:org_id>/billing/", billing.billing, name="org_billing"),
    path("orgs/<int:org_id>/billing/voucher/", billing.voucher, name="org_voucher"),
    path("invitations/<str:token>/", invitations.accept, name="invitation_accept"),
]
