from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from billing.keyset import (
    BY_TIME,
    BadCursor,
    Cursor,
    KeysetPage,
    cursor_parse,
    cursor_sign,
    keyset_page,
)
from portal.api.errors import DomainError


class ApiPagination(PageNumberPagination):
    """``?page=N&page_size=M``; the answer has ``count``, ``next``, ``previous``, ``results``."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


# Page numbers on a keyset list reach this many rows deep; past it, the cursor. An OFFSET
# costs the rows it skips, so an unbounded page number would be a way to make the database
# read a user's whole history on every call.
MAX_PAGE_OFFSET = 10_000


class KeysetApiPagination:
    """The usage lists' pages: ``?cursor=`` (from the previous answer's ``next`` or
    ``previous``) and ``?page_size=`` (1-500, 50 by default). The answer is ``next``,
    ``previous`` (links, or null), ``has_more`` and ``results``, and no total: counting a
    busy user's millions of requests on every page is what made deep pages slow (the daily
    and per-model sums say how many there were).

    ``?page=N``, as these lists answered before, still works for the first
    ``MAX_PAGE_OFFSET`` rows; its ``next`` is a cursor link, so a client that follows the
    links moves onto cursors by itself. ``scope`` binds cursors to one list of one caller:
    another list's or another user's cursor is refused like a garbled one (400
    ``invalid_cursor``)."""

    page_size = 50
    max_page_size = 500

    # drf-spectacular makes one with no arguments, to read the schema methods below.
    def __init__(self, *, scope: str = "", order: Sequence[str] = BY_TIME) -> None:
        self.scope = scope
        self.order = tuple(order)
        self.request: Request | None = None
        self.page: KeysetPage | None = None
        self.page_number: int | None = None

    def _page_size(self, request: Request) -> int:
        try:
            size = int(request.query_params.get("page_size", self.page_size))
        except ValueError:
            return self.page_size  # as DRF's page-number pagination did: the default
        return max(1, min(size, self.max_page_size))

    def _page_number(self, request: Request) -> int | None:
        raw = request.query_params.get("page")
        if raw is None:
            return None
        try:
            number = int(raw)
        except ValueError:
            number = 0
        if number < 1:
            raise ValidationError({"page": ["A page number is a whole number from 1."]})
        return number

    def paginate_queryset(self, queryset: QuerySet, request: Request) -> list[Any]:
        self.request = request
        size = self._page_size(request)
        token = request.query_params.get("cursor")
        number = self._page_number(request)
        if token is not None and number is not None:
            raise ValidationError({"page": ["Send either page or cursor, not both."]})
        if number is not None and number > 1:
            self.page_number = number
            self.page = self._numbered(queryset, number, size)
            return self.page.object_list
        cursor = None
        if token:
            try:
                cursor = cursor_parse(token, order=self.order, scope=self.scope)
            except BadCursor as exc:
                raise DomainError(str(exc), status_code=400, code="invalid_cursor") from None
        self.page = keyset_page(queryset, order=self.order, cursor=cursor, size=size)
        return self.page.object_list

    def _numbered(self, queryset: QuerySet, number: int, size: int) -> KeysetPage:
        offset = (number - 1) * size
        if offset >= MAX_PAGE_OFFSET:
            raise DomainError(f"Page numbers reach the first {MAX_PAGE_OFFSET:,} rows; go "
                              "further with the cursor links (next).",
                              status_code=400, code="page_too_deep")
        fetched = list(queryset.order_by(*(f"-{f}" for f in self.order))
                       [offset:offset + size + 1])
        if not fetched:
            raise NotFound("Invalid page.")
        shown = fetched[:size]
        more = len(fetched) > size
        return KeysetPage(object_list=shown,
                          next_cursor=(Cursor("next", tuple(getattr(shown[-1], f)
                                                             for f in self.order))
                                       if more else None),
                          previous_cursor=None)

    def _link(self, cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        url = remove_query_param(self.request.build_absolute_uri(), "page")
        token = cursor_sign(cursor, order=self.order, scope=self.scope)
        return replace_query_param(url, "cursor", token)

    def _previous(self) -> str | None:
        if self.page_number is not None:  # a numbered page: the page before it, by number
            url = remove_query_param(self.request.build_absolute_uri(), "cursor")
            if self.page_number == 2:
                return remove_query_param(url, "page")
            return replace_query_param(url, "page", self.page_number - 1)
        return self._link(self.page.previous_cursor)

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"next": self._link(self.page.next_cursor),
                         "previous": self._previous(),
                         "has_more": self.page.has_next,
                         "results": data})

    # drf-spectacular reads these two from a view's ``pagination_class``.
    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "cursor", "required": False, "in": "query",
             "description": "Where the page starts: the `cursor` of the previous answer's "
                            "`next` or `previous` link. Without it, the newest requests.",
             "schema": {"type": "string"}},
            {"name": "page_size", "required": False, "in": "query",
             "description": f"Rows per page, 1-{self.max_page_size} "
                            f"(default {self.page_size}).",
             "schema": {"type": "integer"}},
            {"name": "page", "required": False, "in": "query",
             "description": "A page number, for the first "
                            f"{MAX_PAGE_OFFSET:,} rows only (older clients); prefer the "
                            "cursor links.",
             "schema": {"type": "integer"}},
        ]

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {"type": "object", "required": ["next", "previous", "has_more", "results"],
                "properties": {"next": link, "previous": link,
                               "has_more": {"type": "boolean",
                                            "description": "Whether `next` has rows."},
                               "results": schema}}
