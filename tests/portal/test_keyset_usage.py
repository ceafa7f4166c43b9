"""The portal's request lists by cursor: following "Older" walks every request once with the
filters kept, "Newer" and "Newest" come back, a bad or foreign cursor shows the reader's own
newest page, and no page counts the user's history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.views.usage import PAGE_SIZE

pytestmark = pytest.mark.django_db


def _walk(client, path: str, query: dict | None = None) -> tuple[list, list]:
    """Every page through the "Older" links; the rows and each page's response."""
    response = client.get(path, query or {})
    rows, responses = [], []
    while True:
        assert response.status_code == 200
        responses.append(response)
        rows.extend(response.context["page"].object_list)
        older = response.context["links"].older
        if older is None:
            return rows, responses
        response = client.get(path + older)


def _newest_first(records) -> list[int]:
    return [r.pk for r in sorted(records, key=lambda r: (r.created_at, r.pk), reverse=True)]


def test_older_links_walk_every_request_once_ties_broken_by_id(member_client, member,
                                                                make_usage):
    now = timezone.now()
    records = [make_usage(member, at=now - timedelta(seconds=n % 5)) for n in range(60)]

    rows, pages = _walk(member_client, reverse("portal:usage"))

    assert [r.pk for r in rows] == _newest_first(records)
    assert len(pages) == 3
    last = pages[-1].context["links"]
    assert last.older is None
    assert last.newer
    assert last.first
    html = pages[1].content.decode()
    assert 'data-testid="page-newer"' in html
    assert 'data-testid="page-older"' in html
    assert "Page 2 of" not in html  # no page count: it would need the total


def test_newer_goes_back_a_page_and_newest_to_the_first(member_client, member, make_usage):
    now = timezone.now()
    records = [make_usage(member, at=now - timedelta(minutes=n)) for n in range(PAGE_SIZE * 2 + 1)]
    path = reverse("portal:usage")
    first = member_client.get(path)
    second = member_client.get(path + first.context["links"].older)
    third = member_client.get(path + second.context["links"].older)

    back = member_client.get(path + third.context["links"].newer)
    newest = member_client.get(path + third.context["links"].first)

    ids = [r.pk for r in records]
    assert [r.pk for r in back.context["page"].object_list] == ids[PAGE_SIZE:PAGE_SIZE * 2]
    assert [r.pk for r in newest.context["page"].object_list] == ids[:PAGE_SIZE]
    assert first.context["links"].first is None
    assert first.context["links"].newer is None


def test_a_request_made_while_walking_neither_repeats_nor_hides_one(member_client, member,
                                                                    make_usage):
    now = timezone.now()
    records = [make_usage(member, at=now - timedelta(minutes=n)) for n in range(PAGE_SIZE + 5)]
    path = reverse("portal:usage")
    first = member_client.get(path)
    make_usage(member)  # the newest of all, after the first page was read

    second = member_client.get(path + first.context["links"].older)

    shown = [r.pk for r in first.context["page"].object_list] + [
        r.pk for r in second.context["page"].object_list]
    assert shown == [r.pk for r in records]


@pytest.mark.parametrize("case", ["model", "key", "status", "dates"])
def test_filters_stay_on_every_page(member_client, member, make_key, make_usage, case):
    key, other_key = make_key(member, name="k"), make_key(member, name="o")
    now = timezone.now()
    wanted, query = [], {}
    for n in range(PAGE_SIZE * 2 + 3):
        at = now - timedelta(hours=n)
        match = n % 2 == 0
        if case == "model":
            record = make_usage(member, at=at, model="wanted" if match else "other")
            query = {"model": "wanted"}
        elif case == "key":
            record = make_usage(member, at=at, api_key=key if match else other_key)
            query = {"key": key.pk}
        elif case == "status":
            record = make_usage(member, at=at, status="cancelled" if match else "ok")
            query = {"status": "cancelled"}
        else:
            # From noon of their day back, a minute apart: all on that day whatever the
            # time the test runs (counted back from now, those past midnight fell on the
            # day before when it ran soon after midnight).
            noon = (now - timedelta(days=2 if match else 5)).replace(
                hour=12, minute=0, second=0, microsecond=0)
            record = make_usage(member, at=noon - timedelta(minutes=n))
            day = (now - timedelta(days=2)).date().isoformat()
            query = {"since": day, "until": day}
        if match:
            wanted.append(record)

    rows, pages = _walk(member_client, reverse("portal:usage"), query)

    assert [r.pk for r in rows] == _newest_first(wanted)
    assert len(pages) > 1
    for response in pages[1:]:
        for name, value in query.items():
            assert response.wsgi_request.GET[name] == str(value)


@pytest.mark.parametrize("cursor", ["nonsense", "W10:abc:def", ""])
def test_a_garbled_cursor_shows_the_first_page(member_client, member, make_usage, cursor):
    records = [make_usage(member, at=timezone.now() - timedelta(minutes=n)) for n in range(3)]

    response = member_client.get(reverse("portal:usage"), {"cursor": cursor})

    assert response.status_code == 200
    assert [r.pk for r in response.context["page"].object_list] == [r.pk for r in records]


def test_another_users_cursor_shows_nothing_of_theirs(client, member, other, make_usage):
    now = timezone.now()
    theirs = [make_usage(other, at=now - timedelta(minutes=n)) for n in range(PAGE_SIZE + 5)]
    mine = make_usage(member, at=now - timedelta(days=1))
    client.force_login(other)
    their_older = client.get(reverse("portal:usage")).context["links"].older
    client.force_login(member)

    response = client.get(reverse("portal:usage") + their_older)

    shown = [r.pk for r in response.context["page"].object_list]
    assert shown == [mine.pk]  # their cursor is refused: my own newest page, nothing else
    assert not set(shown) & {r.pk for r in theirs}


def test_the_refused_list_pages_by_cursor_too(member_client, member, refuse):
    # One clock read for every group: had the first group read its own, a minute's turn
    # before ``now`` was read would put it in the minute of ``now - 1 minute``, merging the
    # two (one group too few).
    now = timezone.now()
    key = refuse(member, at=now)
    for n in range(1, PAGE_SIZE + 4):  # one group per minute
        refuse(member, key=key, at=now - timedelta(minutes=n))

    rows, pages = _walk(member_client, reverse("portal:usage"), {"status": "refused"})

    assert len(rows) == PAGE_SIZE + 4
    assert len({row.pk for row in rows}) == len(rows)
    assert [row.minute for row in rows] == sorted((row.minute for row in rows), reverse=True)
    assert len(pages) == 2


def test_no_page_counts_the_users_requests(member_client, member, make_usage):
    for n in range(PAGE_SIZE + 2):
        make_usage(member, at=timezone.now() - timedelta(minutes=n))
    path = reverse("portal:usage")
    older = member_client.get(path).context["links"].older

    for url in (path, path + older, path + "?model=test-model"):
        with CaptureQueriesContext(connection) as queries:
            assert member_client.get(url).status_code == 200
        counts = [q["sql"] for q in queries.captured_queries
                  if "COUNT(" in q["sql"].upper() and "billing_usagerecord" in q["sql"]
                  and "created_at\" >=" not in q["sql"]]
        # Today's requests are summed from the records (the chart's last bar); never the
        # whole history, and never to number the pages.
        assert counts == [], counts
