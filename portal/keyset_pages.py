"""The portal's lists of requests, a page at a time by cursor (billing.keyset): the page, and
the links to the first, newer and older pages with the filters kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict

from billing.keyset import (
    BY_TIME,
    BadCursor,
    Cursor,
    KeysetPage,
    cursor_parse,
    cursor_sign,
    keyset_page,
)

CURSOR = "cursor"


@dataclass(frozen=True)
class PageLinks:
    """Query strings (``?...``) of the neighbouring pages; None where there is none."""

    first: str | None
    newer: str | None
    older: str | None


def _query(base: QueryDict, token: str | None) -> str:
    query = base.copy()
    if token is not None:
        query[CURSOR] = token
    text = query.urlencode()
    return f"?{text}" if text else "?"


def portal_page(request: HttpRequest, records: QuerySet, *, scope: str, size: int,
                order: Sequence[str] = BY_TIME) -> tuple[KeysetPage, PageLinks]:
    """The page of ``records`` that ``?cursor=`` names, the first page without one or when it
    is not valid here (a link from another list, an old bookmark, a mangled URL: nothing to
    explain to a person, the newest rows are what they came for). ``scope`` names the list
    and its reader, so a cursor made for someone else shows nothing of theirs."""
    cursor: Cursor | None = None
    token = request.GET.get(CURSOR)
    if token:
        try:
            cursor = cursor_parse(token, order=order, scope=scope)
        except BadCursor:
            cursor = None
    page = keyset_page(records, order=order, cursor=cursor, size=size)
    # The filters as asked for, without the cursor or the page numbers of old links.
    base = request.GET.copy()
    for name in (CURSOR, "page"):
        base.pop(name, None)

    def link(at: Cursor | None) -> str | None:
        return None if at is None else _query(base, cursor_sign(at, order=order, scope=scope))

    return page, PageLinks(first=_query(base, None) if cursor is not None else None,
                           newer=link(page.previous_cursor), older=link(page.next_cursor))
