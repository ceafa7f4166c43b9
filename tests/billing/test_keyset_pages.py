"""Keyset pages (billing.keyset): walking a list by cursor returns every row once, in order,
whatever shares a timestamp and whatever is inserted meanwhile; a cursor works only for the
list and the reader it was made for."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.keyset import (
    BY_ID,
    BY_TIME,
    BadCursor,
    Cursor,
    cursor_parse,
    cursor_sign,
    keyset_page,
)
from billing.models import UsageRecord

pytestmark = pytest.mark.django_db

_ids = itertools.count()


def _record(user, price, *, at=None) -> UsageRecord:
    record = UsageRecord.objects.create(request_id=f"keyset-{next(_ids)}", user=user,
                                        model=price.model, price=price)
    if at is not None:
        UsageRecord.objects.filter(pk=record.pk).update(created_at=at)
        record.created_at = at
    return record


def _walk(queryset, *, size, order=BY_TIME, between_pages=None) -> list:
    """Every page from the first, through signed cursors, as a client walks them."""
    seen, cursor = [], None
    while True:
        page = keyset_page(queryset, order=order, cursor=cursor, size=size)
        seen.extend(page.object_list)
        if not page.has_next:
            return seen
        token = cursor_sign(page.next_cursor, order=order, scope="test")
        if between_pages is not None:
            between_pages()
        cursor = cursor_parse(token, order=order, scope="test")


def _newest_first(records) -> list[int]:
    return [r.pk for r in sorted(records, key=lambda r: (r.created_at, r.pk), reverse=True)]


def test_walking_every_page_returns_each_record_once_newest_first_ties_by_id(user, price):
    now = timezone.now()
    # Four timestamps, each shared by several records: a page boundary falls inside a tie.
    records = [_record(user, price, at=now - timedelta(seconds=n % 4)) for n in range(23)]

    walked = _walk(UsageRecord.objects.filter(user=user), size=5)

    assert [r.pk for r in walked] == _newest_first(records)


def test_records_inserted_while_walking_do_not_repeat_or_hide_older_ones(user, price):
    now = timezone.now()
    records = [_record(user, price, at=now - timedelta(minutes=n)) for n in range(12)]
    inserted = []

    walked = _walk(UsageRecord.objects.filter(user=user), size=4,
                   between_pages=lambda: inserted.append(_record(user, price)))

    assert [r.pk for r in walked] == _newest_first(records)
    assert inserted  # and they are on the first page of the next walk
    first = keyset_page(UsageRecord.objects.filter(user=user), cursor=None, size=4)
    assert {r.pk for r in first.object_list} >= {r.pk for r in inserted[-2:]}


def test_going_back_shows_the_newer_page_again(user, price):
    now = timezone.now()
    records = [_record(user, price, at=now - timedelta(seconds=n // 2)) for n in range(10)]
    expected = _newest_first(records)
    rows = UsageRecord.objects.filter(user=user)

    first = keyset_page(rows, cursor=None, size=4)
    second = keyset_page(rows, cursor=first.next_cursor, size=4)
    back = keyset_page(rows, cursor=second.previous_cursor, size=4)

    assert [r.pk for r in second.object_list] == expected[4:8]
    assert [r.pk for r in back.object_list] == expected[:4]
    assert not back.has_previous
    assert back.has_next
    assert not first.has_previous


def test_the_last_page_has_no_next_and_an_empty_list_no_links(user, price):
    for n in range(4):
        _record(user, price, at=timezone.now() - timedelta(minutes=n))

    page = keyset_page(UsageRecord.objects.filter(user=user), cursor=None, size=4)
    empty = keyset_page(UsageRecord.objects.none(), cursor=None, size=4)

    assert len(page.object_list) == 4
    assert not page.has_next
    assert empty.object_list == []
    assert not empty.has_other_pages


def test_a_list_ordered_by_id_alone_walks_by_id(user, price):
    records = [_record(user, price) for _ in range(7)]

    walked = _walk(UsageRecord.objects.filter(user=user), size=3, order=BY_ID)

    assert [r.pk for r in walked] == sorted((r.pk for r in records), reverse=True)


@pytest.mark.parametrize("token", ["", "garbage", "W10:1abc:xyz", "a" * 300,
                                   "WyJuIiwiMjAyNi0wMS0wMVQwMDowMDowMCswMDowMCIsMV0:forged"])
def test_a_forged_or_garbled_cursor_is_refused(token):
    with pytest.raises(BadCursor):
        cursor_parse(token, order=BY_TIME, scope="usage:1")


def test_a_cursor_is_valid_only_for_its_list_reader_and_order():
    cursor = Cursor("next", (timezone.now(), 41))
    token = cursor_sign(cursor, order=BY_TIME, scope="usage:1")

    assert cursor_parse(token, order=BY_TIME, scope="usage:1") == cursor
    for scope, order in (("usage:2", BY_TIME), ("org-usage:1:1", BY_TIME),
                         ("usage:1", ("minute", "id"))):
        with pytest.raises(BadCursor):
            cursor_parse(token, order=order, scope=scope)
