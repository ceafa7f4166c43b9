"""The /api/orgs routes, spread into ``portal.api.urls`` (names in its ``api`` namespace),
before its catch-all 404."""

from __future__ import annotations

from django.urls import path

from portal.api.views.organizations.billing import (
    OrgBalanceApi,
    OrgLedgerApi,
    OrgVoucherRedeemApi,
)
from portal.api.views.organizations.budgets import BudgetDetailApi, BudgetListApi
from portal.api.views.organizations.invitations import InvitationDetailApi, InvitationListApi
from portal.api.views.organizations.keys import OrgKeyDetailApi, OrgKeyListApi
from portal.api.views.organizations.members import MemberDetailApi, MemberListApi
from portal.api.views.organizations.organizations import (
    OrgDetailApi,
    OrgListApi,
    OrgTransferApi,
)
from portal.api.views.organizations.receipts import OrgReceiptDetailApi, OrgReceiptListApi
from portal.api.views.organizations.topups import (
    OrgAutoTopUpApi,
    OrgAutoTopUpCardApi,
    OrgCheckoutApi,
    OrgTopUpDetailApi,
    OrgTopUpListApi,
)
from portal.api.views.organizations.usage import (
    OrgUsageByKeyApi,
    OrgUsageByMemberApi,
    OrgUsageByModelApi,
    OrgUsageDailyApi,
    OrgUsageListApi,
)

organization_api_urlpatterns = [
    path("orgs", OrgListApi.as_view(), name="orgs"),
    path("orgs/<int:org_id>", OrgDetailApi.as_view(), name="org"),
    path("orgs/<int:org_id>/transfer", OrgTransferApi.as_view(), name="org-transfer"),
    path("orgs/<int:org_id>/members", MemberListApi.as_view(), name="org-members"),
    path("orgs/<int:org_id>/members/<int:user_id>", MemberDetailApi.as_view(),
         name="org-member"),
    path("orgs/<int:org_id>/invitations", InvitationListApi.as_view(),
         name="org-invitations"),
    path("orgs/<int:org_id>/invitations/<int:invitation_id>", InvitationDetailApi.as_view(),
         name="org-invitation"),
    path("orgs/<int:org_id>/keys", OrgKeyListApi.as_view(), name="org-keys"),
    path("orgs/<int:org_id>/keys/<int:key_id>", OrgKeyDetailApi.as_view(), name="org-key"),
    path("orgs/<int:org_id>/budgets", BudgetListApi.as_view(), name="org-budgets"),
    path("orgs/<int:org_id>/budgets/<int:user_id>", BudgetDetailApi.as_view(),
         name="org-budget"),
    path("orgs/<int:org_id>/usage", OrgUsageListApi.as_view(), name="org-usage"),
    path("orgs/<int:org_id>/usage/daily", OrgUsageDailyApi.as_view(), name="org-usage-daily"),
    path("orgs/<int:org_id>/usage/members", OrgUsageByMemberApi.as_view(),
         name="org-usage-members"),
    path("orgs/<int:org_id>/usage/keys", OrgUsageByKeyApi.as_view(), name="org-usage-keys"),
    path("orgs/<int:org_id>/usage/models", OrgUsageByModelApi.as_view(),
         name="org-usage-models"),
    path("orgs/<int:org_id>/balance", OrgBalanceApi.as_view(), name="org-balance"),
    path("orgs/<int:org_id>/ledger", OrgLedgerApi.as_view(), name="org-ledger"),
    path("orgs/<int:org_id>/vouchers/redeem", OrgVoucherRedeemApi.as_view(),
         name="org-voucher-redeem"),
    path("orgs/<int:org_id>/topups", OrgTopUpListApi.as_view(), name="org-topups"),
    path("orgs/<int:org_id>/topups/<int:topup_id>", OrgTopUpDetailApi.as_view(),
         name="org-topup"),
    path("orgs/<int:org_id>/topups/checkout", OrgCheckoutApi.as_view(),
         name="org-topup-checkout"),
    path("orgs/<int:org_id>/auto-topup", OrgAutoTopUpApi.as_view(), name="org-auto-topup"),
    path("orgs/<int:org_id>/auto-topup/card", OrgAutoTopUpCardApi.as_view(),
         name="org-auto-topup-card"),
    path("orgs/<int:org_id>/receipts", OrgReceiptListApi.as_view(), name="org-receipts"),
    path("orgs/<int:org_id>/receipts/<int:entry_id>", OrgReceiptDetailApi.as_view(),
         name="org-receipt"),
]
