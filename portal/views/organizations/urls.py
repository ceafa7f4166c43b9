"""The organization pages' routes, spread into ``portal.urls`` (names in its ``portal``
namespace)."""

from __future__ import annotations

from django.urls import path

from portal.views.organizations import (
    auto_topup,
    billing,
    billing_papers,
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
    path("orgs/<int:org_id>/billing/checkout/", billing.checkout, name="org_checkout"),
    path("orgs/<int:org_id>/billing/auto/", auto_topup.auto_topup, name="org_auto_topup"),
    path("orgs/<int:org_id>/billing/auto/card/", auto_topup.auto_topup_card,
         name="org_auto_topup_card"),
    path("orgs/<int:org_id>/billing/auto/card/done/", auto_topup.auto_topup_card_done,
         name="org_auto_topup_card_done"),
    path("orgs/<int:org_id>/billing/auto/pay-and-save/", auto_topup.auto_topup_pay_and_save,
         name="org_auto_topup_pay_and_save"),
    path("orgs/<int:org_id>/billing/receipts/<int:entry_id>/", billing_papers.receipt,
         name="org_receipt"),
    path("orgs/<int:org_id>/billing/receipts/<int:entry_id>/receipt.pdf",
         billing_papers.receipt_pdf, name="org_receipt_pdf"),
    path("orgs/<int:org_id>/billing/details/", billing_papers.billing_details,
         name="org_billing_details"),
    path("orgs/<int:org_id>/billing/statement/", billing_papers.statement_page,
         name="org_statement"),
    path("orgs/<int:org_id>/billing/statement.csv", billing_papers.statement_csv,
         name="org_statement_csv"),
    path("invitations/<str:token>/", invitations.accept, name="invitation_accept"),
]
