"""Management tokens: the credentials of this API. Only a signed-in session manages them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.selectors import management_token_of, management_tokens_of
from accounts.services import management_token_create, management_token_revoke
from portal.api.base import ApiView, SessionOnly
from portal.api.pagination import ApiPagination
from portal.api.schema import error_responses
from portal.api.serializers import StrictInputSerializer

# In the schema: these operations take the session cookie only (see SessionOnly).
SESSION_ONLY = [{"cookieAuth": []}]


class TokenOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class CreatedTokenOutputSerializer(TokenOutputSerializer):
    secret = serializers.CharField(help_text="The whole token, shown in this answer only.")


class TokenListApi(ApiView):
    permission_classes = [IsAuthenticated, SessionOnly]
    pagination_class = ApiPagination

    class TokenInputSerializer(StrictInputSerializer):
        name = serializers.CharField(max_length=100, allow_blank=True, default="")

    @extend_schema(operation_id="tokens_list", auth=SESSION_ONLY,
                   summary="Your management tokens (session only)",
                   responses={200: TokenOutputSerializer(many=True), **error_responses(404)})
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(management_tokens_of(user=request.user), request,
                                           view=self)
        return paginator.get_paginated_response(TokenOutputSerializer(page, many=True).data)

    @extend_schema(operation_id="tokens_create", auth=SESSION_ONLY,
                   summary="Create a management token (session only)",
                   description="The answer carries the token's `secret`, once.",
                   request=TokenInputSerializer,
                   responses={201: CreatedTokenOutputSerializer, **error_responses(400)})
    def post(self, request: Request) -> Response:
        serializer = self.TokenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = management_token_create(user=request.user, **serializer.validated_data)
        body = {**TokenOutputSerializer(created.token).data, "secret": created.secret}
        # no-store: the secret must not be kept by any cache on the way.
        return Response(CreatedTokenOutputSerializer(body).data,
                        status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


class TokenDetailApi(ApiView):
    permission_classes = [IsAuthenticated, SessionOnly]

    @extend_schema(operation_id="tokens_revoke", auth=SESSION_ONLY,
                   summary="Revoke a management token (session only)",
                   responses={200: TokenOutputSerializer, **error_responses(404)})
    def delete(self, request: Request, token_id: int) -> Response:
        token = management_token_of(user=request.user, token_id=token_id)
        return Response(TokenOutputSerializer(management_token_revoke(token=token)).data)
