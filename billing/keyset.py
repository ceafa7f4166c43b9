"""Keyset (cursor) pages over the tables that only grow: usage records, holds, the ledger.

A page is "the next N rows after this one" in a fixed order that an index holds
(``created_at DESC, id DESC``, or ``id DESC`` for the ledger), so page 10,000 costs what
page 1 costs: the database starts reading at the cursor instead of counting its way there
(OFFSET), and nothing counts the whole list (one row more than the page is read to know
whether there is a next one).

The cursor is the position of a page's last row (or, going back, its first), signed with
the site's secret and a scope (which list, whose), so a client cannot hand in a position
it made up or one from another list; a cursor that does not verify is ``BadCursor``: the
API answers 400, a page falls back to the first page. A row inserted while someone walks
is newer than their cursor and never shows up twice; rows that share a ``created_at`` are
told apart by the id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.core import signing
from django.db.models import Model, Q, QuerySet

# Newest first by time, ties broken by id: the order of the usage and hold indexes.
BY_TIME = ("created_at", "id")
# Newest first by id alone: the ledger's (its ids are assigned in commit order per wallet
# row lock, and its indexes are on id).
BY_ID = ("id",)

Direction = Literal["next", "prev"]


class BadCursor(ValueError):
    """A cursor that was not made by us for this list, or was mangled on the way."""


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after ``values`` (going older) or before them (going newer)."""

    direction: Direction
    values: tuple[Any, ...]


def _encode_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _decode_value(field: str, value: Any) -> Any:
    if field in ("created_at", "minute"):
        if not isinstance(value, str):
            raise BadCursor("Bad cursor.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadCursor("Bad cursor.") from None
        if moment.tzinfo is None:
            raise BadCursor("Bad cursor.")
        return moment
    # An id: an integer, or a request id (holds) as text. bool is an int to Python.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadCursor("Bad cursor.")
    return value


def cursor_sign(cursor: Cursor, *, order: Sequence[str], scope: str) -> str:
    """An opaque, URL-safe token for ``cursor`` in the list named by ``scope``."""
    payload = [cursor.direction[0], *(_encode_value(v) for v in cursor.values)]
    return signing.dumps(payload, salt=f"keyset:{scope}:{','.join(order)}", compress=False)


def cursor_parse(token: str, *, order: Sequence[str], scope: str) -> Cursor:
    """The cursor ``token`` stands for, or ``BadCursor``: forged, garbled, made for another
    list or another user (the scope), or for another order."""
    try:
        payload = signing.loads(token, salt=f"keyset:{scope}:{','.join(order)}")
    except (signing.BadSignature, ValueError, TypeError):
        raise BadCursor("This cursor is not valid here: start again from the first "
                        "page, or follow the links of the page you came from.") from None
    if (not isinstance(payload, list) or len(payload) != len(order) + 1
            or payload[0] not in ("n", "p")):
        raise BadCursor("Bad cursor.")
    direction: Direction = "next" if payload[0] == "n" else "prev"
    values = tuple(_decode_value(field, value) for field, value in zip(order, payload[1:],
                                                                         strict=True))
    return Cursor(direction=direction, values=values)


def _after(order: Sequence[str], values: Sequence[Any], *, older: bool) -> Q:
    """Rows strictly past ``values`` in the order (older, or newer with ``older=False``).

    Written as ``a <= x AND (a < x OR b < y)`` rather than the OR alone: the leading
    ``a <= x`` is a range the index can start its scan at (PostgreSQL does not turn an OR
    into an index range), the OR then only settles the rows that share ``a``."""
    lt, le = ("lt", "lte") if older else ("gt", "gte")
    first, value = order[0], values[0]
    if len(order) == 1:
        return Q(**{f"{first}__{lt}": value})
    tail = _after(order[1:], values[1:], older=older)
    return Q(**{f"{first}__{le}": value}) & (Q(**{f"{first}__{lt}": value})
                                             | (Q(**{first: value}) & tail))


@dataclass(frozen=True)
class KeysetPage:
    """One page of rows, newest first, and the cursors of its neighbours (None: none)."""

    object_list: list[Any]
    next_cursor: Cursor | None
    previous_cursor: Cursor | None

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    @property
    def has_previous(self) -> bool:
        return self.previous_cursor is not None

    @property
    def has_other_pages(self) -> bool:
        return self.has_next or self.has_previous

    def __iter__(self) -> Iterator[Any]:
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)


def _position(row: Model | dict, order: Sequence[str]) -> tuple[Any, ...]:
    if isinstance(row, dict):
        return tuple(row[field] for field in order)
    return tuple(getattr(row, field) for field in order)


def keyset_page(queryset: QuerySet, *, order: Sequence[str] = BY_TIME,
                cursor: Cursor | None = None, size: int) -> KeysetPage:
    """``size`` rows of ``queryset`` (its filters kept, its ordering replaced by ``order``,
    every field descending) from ``cursor`` on; the first page without one.

    One query of ``size + 1`` rows: the extra row says whether there is a page beyond. A
    page reached going back (``prev``) knows it has a next one (the page it came from);
    whether it has a previous one is its own extra row."""
    if size < 1:
        raise ValueError("A page has at least one row.")
    newest_first = [f"-{field}" for field in order]
    if cursor is None or cursor.direction == "next":
        rows = queryset
        if cursor is not None:
            rows = rows.filter(_after(order, cursor.values, older=True))
        fetched = list(rows.order_by(*newest_first)[:size + 1])
        shown = fetched[:size]
        more = len(fetched) > size
        return KeysetPage(
            object_list=shown,
            next_cursor=Cursor("next", _position(shown[-1], order)) if more else None,
            # Coming from a cursor there is a newer page; its first row is this one's first.
            previous_cursor=(Cursor("prev", _position(shown[0], order))
                             if cursor is not None and shown else None))
    oldest_first = list(order)
    fetched = list(queryset.filter(_after(order, cursor.values, older=False))
                   .order_by(*oldest_first)[:size + 1])
    more_newer = len(fetched) > size
    shown = fetched[:size][::-1]
    if not shown:
        return KeysetPage(object_list=[], next_cursor=None, previous_cursor=None)
    return KeysetPage(
        object_list=shown,
        next_cursor=Cursor("next", _position(shown[-1], order)),
        previous_cursor=Cursor("prev", _position(shown[0], order)) if more_newer else None)
