"""Budgets per member: each member reads their own; admins, billing members and owners read
everyone's; admins and owners set the caps (``PUT``, both caps, null for none)."""

from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors.organization_usage import MemberBudgetView, member_budgets_of
from organizations.roles import Action
from organizations.selectors import usage_scope
from organizations.services import member_budget_update
from portal.api.fields import UsdAmountField, UsdField
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer
from portal.api.views.organizations.base import OrgApiView
from portal.views.organizations.access import OrgAccess, usage_member


class BudgetSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    email = serializers.EmailField()
    lifetime_cap_micros = serializers.IntegerField(source="lifetime_limit_micros",
                                                   allow_null=True, help_text="null: no cap.")
    lifetime_cap_usd = UsdField(source="lifetime_limit_micros", allow_null=True)
    monthly_cap_micros = serializers.IntegerField(source="monthly_limit_micros",
                                                  allow_null=True, help_text="null: no cap.")
    monthly_cap_usd = UsdField(source="monthly_limit_micros", allow_null=True)
    spent_micros = serializers.IntegerField(help_text="Spent in the organization, ever.")
    spent_usd = UsdField(source="spent_micros")
    month_spent_micros = serializers.IntegerField(help_text="Spent this UTC month.")
    month_spent_usd = UsdField(source="month_spent_micros")
    held_micros = serializers.IntegerField(source="pending_micros",
                                           help_text="Held by requests in flight.")
    held_usd = UsdField(source="pending_micros")


def _budget(access: OrgAccess, user_id: int) -> MemberBudgetView:
    member = usage_member(access, user_id)  # another's, for a member: 403; not here: 404
    return member_budgets_of(organization=access.organization, member=member)[0]


class BudgetListApi(OrgApiView):
    @extend_schema(operation_id="org_budgets_list", summary="Members' budgets and spend",
                   description="Yours only, unless your role sees every member's usage.",
                   responses={200: BudgetSerializer(many=True), **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        access = self.access(request, org_id)
        rows = member_budgets_of(organization=access.organization,
                                 member=usage_scope(role=access.role, user=request.user))
        return Response(BudgetSerializer([asdict(row) for row in rows], many=True).data)


class BudgetDetailApi(OrgApiView):
    class BudgetInputSerializer(StrictInputSerializer):
        lifetime_cap_usd = UsdAmountField(source="lifetime_limit_micros", allow_null=True,
                                          help_text="Most the member may ever spend here; "
                                          "null: no cap.")
        monthly_cap_usd = UsdAmountField(source="monthly_limit_micros", allow_null=True,
                                         help_text="Most per UTC month; null: no cap.")

    @extend_schema(operation_id="org_budgets_retrieve", summary="One member's budget",
                   responses={200: BudgetSerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int, user_id: int) -> Response:
        access = self.access(request, org_id)
        return Response(BudgetSerializer(asdict(_budget(access, user_id))).data)

    @extend_schema(operation_id="org_budgets_update",
                   summary="Set a member's caps (admins and owners)",
                   description="Both caps, in USD strings; null clears one. A cap below "
                   "what the member already spent is refused (400).",
                   request=BudgetInputSerializer,
                   responses={200: BudgetSerializer, **error_responses(400, 404)})
    def put(self, request: Request, org_id: int, user_id: int) -> Response:
        access = self.access(request, org_id, Action.MANAGE_BUDGETS)
        member = usage_member(access, user_id)  # not a member here: 404
        assert member is not None  # a role that manages budgets sees every member's
        serializer = self.BudgetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        member_budget_update(organization=access.organization, actor=request.user,
                             user=member, **serializer.validated_data)
        return Response(BudgetSerializer(asdict(_budget(access, user_id))).data)
