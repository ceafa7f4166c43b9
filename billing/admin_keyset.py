"""The admin's lists of the tables that only grow (usage records, holds, ledger entries,
refused requests), a page at a time by cursor (billing.keyset), without counting.

Django's changelist counts the filtered table on every view (``paginator.count``;
``show_full_result_count = False`` only drops the second, unfiltered count) and pages by
OFFSET. At ten million rows the count alone is most of the page. Here a page is read in the
order of an index (newest first), one row more than it shows says whether there are older
ones, and the links are "Newest", "Newer" and "Older" with the filters and the search kept.
These lists cannot be sorted by column (a sort on another column reads the whole table),
and the filters show no counts (each would be a COUNT over the table).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import ShowFacets
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.http import HttpRequest

from billing.keyset import (
    BY_TIME,
    BadCursor,
    Cursor,
    KeysetPage,
    cursor_parse,
    cursor_sign,
    keyset_page,
)

CURSOR_VAR = "cursor"


class _NoPageNumbers:
    """Stands in for the paginator the changelist's templates ask about: no page numbers."""

    num_pages = 1
    ELLIPSIS = "…"

    def get_elided_page_range(self, *args: Any, **kwargs: Any) -> list[int]:
        return []


class KeysetChangeList(ChangeList):
    is_keyset = True  # the billing admin's pagination template draws cursor links

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        # The cursor is not a filter: out of the query the changelist reads its filters
        # from (an unknown parameter would send it to its "?e=1" error page), and out of
        # the links it makes (a new filter or search starts again from the newest).
        self.cursor_token = request.GET.get(CURSOR_VAR, "")
        self.keyset: KeysetPage | None = None
        if CURSOR_VAR in request.GET:
            request = copy.copy(request)
            query = request.GET.copy()
            del query[CURSOR_VAR]
            request.GET = query
        super().__init__(request, *args, **kwargs)

    @property
    def keyset_order(self) -> Sequence[str]:
        return self.model_admin.keyset_order

    @property
    def keyset_scope(self) -> str:
        return f"admin:{self.opts.label_lower}"

    def get_results(self, request: HttpRequest) -> None:
        cursor: Cursor | None = None
        if self.cursor_token:
            try:
                cursor = cursor_parse(self.cursor_token, order=self.keyset_order,
                                      scope=self.keyset_scope)
            except BadCursor:
                cursor = None  # an old or mangled link: the newest rows
        page = keyset_page(self.queryset, order=self.keyset_order, cursor=cursor,
                           size=self.list_per_page)
        self.keyset = page
        self.result_list = page.object_list
        # What the templates read: the rows on this page, never a count of the table.
        self.result_count = len(page.object_list)
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.can_show_all = False
        self.show_all = False
        self.multi_page = page.has_other_pages
        self.paginator = _NoPageNumbers()
        self.keyset_first_url = (self.get_query_string(remove=[PAGE_VAR])
                                 if cursor is not None else None)
        self.keyset_newer_url = self._cursor_url(page.previous_cursor)
        self.keyset_older_url = self._cursor_url(page.next_cursor)

    def _cursor_url(self, cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        token = cursor_sign(cursor, order=self.keyset_order, scope=self.keyset_scope)
        return self.get_query_string({CURSOR_VAR: token}, remove=[PAGE_VAR])


class KeysetAdminMixin(admin.ModelAdmin):
    """Mixed into a ReadOnlyAdmin of a big table. ``keyset_order``: the fields of the index
    the list is read by, newest first (``billing.keyset.BY_TIME`` or ``BY_ID``)."""

    keyset_order: Sequence[str] = BY_TIME
    sortable_by: Sequence[str] = ()
    show_facets = ShowFacets.NEVER
    show_full_result_count = False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return KeysetChangeList
