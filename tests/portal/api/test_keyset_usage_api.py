"""/api/usage and /api/orgs/{id}/usage by cursor: ``next`` walks every request once with the
filters kept, ``has_more`` says whether it has rows, no total is counted, a bad or foreign
cursor is a 400 in the API's error format, and page numbers still work for shallow pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.api.pagination import MAX_PAGE_OFFSET
from tests.portal.api.conftest import session_client


def _ids(records) -> list[str]:
    ordered = sorted(records, key=lambda r: (r.created_at, r.pk), reverse=True)
    return [r.request_id for r in ordered]


def _walk(client, path: str, query: dict) -> tuple[list[str], list[dict]]:
    body = client.get(path, query).json()
    seen, bodies = [], []
    while True:
        bodies.append(body)
        seen.extend(row["request_id"] for row in body["results"])
        assert body["has_more"] is (body["next"] is not None)
        if body["next"] is None:
            return seen, bodies
        body = client.get(body["next"]).json()


def test_next_walks_every_request_once_with_ties_and_no_total(api, member, make_usage):
    now = timezone.now()
    records = [make_usage(member, at=now - timedelta(seconds=n % 3)) for n in range(23)]

    seen, bodies = _walk(api, "/api/usage", {"page_size": 5})

    assert seen == _ids(records)
    assert len(bodies) == 5
    assert set(bodies[0]) == {"next", "previous", "has_more", "results"}  # no "count"
    assert bodies[0]["previous"] is None
    assert bodies[1]["previous"]
    back = api.get(bodies[2]["previous"]).json()
    assert [row["request_id"] for row in back["results"]] == seen[5:10]


def test_filters_stay_in_the_next_links(api, member, make_key, make_usage):
    key = make_key(member, name="k")
    now = timezone.now()
    wanted = []
    for n in range(14):
        match = n % 2 == 0
        record = make_usage(member, at=now - timedelta(minutes=n), model="m1" if match else "m2",
                            api_key=key if n % 4 == 0 else None)
        if match and n % 4 == 0:
            wanted.append(record)

    seen, bodies = _walk(api, "/api/usage", {"model": "m1", "key": key.pk, "page_size": 2})

    assert seen == _ids(wanted)
    assert all("model=m1" in body["next"] for body in bodies[:-1])


def test_a_request_made_while_walking_is_not_seen_twice(api, member, make_usage):
    records = [make_usage(member, at=timezone.now() - timedelta(minutes=n)) for n in range(6)]
    first = api.get("/api/usage", {"page_size": 3}).json()
    make_usage(member)

    second = api.get(first["next"]).json()

    seen = [row["request_id"] for row in first["results"] + second["results"]]
    assert seen == [r.request_id for r in records]
    assert second["has_more"] is False


@pytest.mark.parametrize("cursor", ["nonsense", "W10:abc:def",
                                    "WyJuIiwiMjAyNi0wMS0wMSIsMV0:forgedsignature"])
def test_a_garbled_or_forged_cursor_is_a_400_in_the_api_format(api, member, make_usage,
                                                                cursor):
    make_usage(member)

    response = api.get("/api/usage", {"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_another_users_cursor_is_refused_and_shows_nothing_of_theirs(db, member, other,
                                                                    make_usage):
    for n in range(4):
        make_usage(other, at=timezone.now() - timedelta(minutes=n))
    theirs = session_client(other).get("/api/usage", {"page_size": 2}).json()["next"]

    response = session_client(member).get(theirs)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_page_numbers_still_work_for_shallow_pages_and_lead_onto_cursors(api, member,
                                                                        make_usage):
    records = [make_usage(member, at=timezone.now() - timedelta(minutes=n)) for n in range(7)]
    ids = [r.request_id for r in records]

    second = api.get("/api/usage", {"page": 2, "page_size": 3}).json()
    third = api.get(second["next"]).json()
    first = api.get(second["previous"]).json()

    assert [row["request_id"] for row in second["results"]] == ids[3:6]
    assert "cursor=" in second["next"]
    assert "page=" not in second["next"]
    assert [row["request_id"] for row in third["results"]] == ids[6:]
    assert [row["request_id"] for row in first["results"]] == ids[:3]
    assert api.get("/api/usage", {"page": 9, "page_size": 3}).status_code == 404


def test_a_deep_page_number_points_to_the_cursor(api, member, make_usage):
    make_usage(member)

    response = api.get("/api/usage", {"page": MAX_PAGE_OFFSET // 50 + 1})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "page_too_deep"
    for bad in ({"page": "0"}, {"page": "x"}, {"page": 2, "cursor": "abc"}):
        assert api.get("/api/usage", bad).json()["error"]["fields"]["page"]


def test_no_page_counts_the_users_requests(api, member, make_usage):
    for n in range(6):
        make_usage(member, at=timezone.now() - timedelta(minutes=n))
    body = api.get("/api/usage", {"page_size": 2}).json()

    for path, query in (("/api/usage", {"page_size": 2}), (body["next"], {}),
                        ("/api/usage", {"page": 2, "page_size": 2})):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path, query).status_code == 200
        assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
