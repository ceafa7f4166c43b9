"""Receipts of an organization's credits (card top-ups whoever paid, vouchers, staff
credits), for its owners and billing members: the same figures as /api/receipts, made out to
the organization's billing name (or its name). Another organization's receipt, a member's
own, or an entry that is not a credit, is a 404 here."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors.receipts import receipt_entries_of, receipt_for, receipts_from
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.views.organizations.base import OrgApiView
from portal.api.views.receipts import ReceiptOutputSerializer


class OrgReceiptListApi(OrgApiView):
    pagination_class = ApiPagination

    @extend_schema(operation_id="org_receipts_list",
                   summary="Receipts of the organization's credits, newest first",
                   description="Owners and billing members; other members get 403.",
                   responses={200: ReceiptOutputSerializer(many=True), **error_responses(404)})
    def get(self, request: Request, org_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(receipt_entries_of(user=request.user, wallet=wallet),
                                           request, view=self)
        return paginator.get_paginated_response(
            ReceiptOutputSerializer(receipts_from(entries=page), many=True).data)


class OrgReceiptDetailApi(OrgApiView):
    @extend_schema(operation_id="org_receipts_retrieve",
                   summary="The receipt of one of the organization's credits",
                   description="By ledger entry id (the `id` of `GET /api/orgs/{id}/receipts`).",
                   responses={200: ReceiptOutputSerializer, **error_responses(404)})
    def get(self, request: Request, org_id: int, entry_id: int) -> Response:
        _, wallet = self.billing_access(request, org_id)
        return Response(ReceiptOutputSerializer(receipt_for(user=request.user,
                                                            entry_id=entry_id,
                                                            wallet=wallet)).data)
