"""The admin's roll-up list pages by cursor in the order of its index (period, bucket_start)
and never counts, dates or lists the distinct values of the table: at millions of roll-up
rows each of those reads the whole table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.admin import UsageRollupAdmin
from billing.keyset import keyset_page
from billing.models import UsageRollup
from tests.billing.plans import plan_of

pytestmark = pytest.mark.django_db

PER_PAGE = 4
START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def rollups(user, make_user, monkeypatch):
    """Hourly and daily rows of two users and two models over six days (rows sharing a
    bucket, so a page boundary falls inside one); lists of 4 a page."""
    monkeypatch.setattr(UsageRollupAdmin, "list_per_page", PER_PAGE)
    other = make_user()
    rows = []
    for day in range(6):
        for who in (user, other):
            for model in ("m-a", "m-b"):
                rows.append(UsageRollup(period="day", bucket_start=START + timedelta(days=day),
                                        user=who, model=model, requests=day + 1,
                                        cost_micros=100 * (day + 1)))
                rows.append(UsageRollup(period="hour",
                                        bucket_start=START + timedelta(days=day, hours=day),
                                        user=who, model=model, requests=1, cost_micros=10))
    UsageRollup.objects.bulk_create(rows)


def _walk(client, query: str = "") -> tuple[list[int], list[list[str]]]:
    path = reverse("admin:billing_usagerollup_changelist")
    url, seen, pages = f"{path}?{query}", [], []
    while True:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, url
        pages.append([q["sql"] for q in queries.captured_queries])
        cl = response.context["cl"]
        seen.extend(row.pk for row in cl.result_list)
        if cl.keyset_older_url is None:
            return seen, pages
        url = path + cl.keyset_older_url


def _in_index_order(rows) -> list[int]:
    return [row.pk for row in sorted(rows, key=lambda r: (r.period, r.bucket_start, r.pk),
                                     reverse=True)]


def test_the_list_walks_every_row_once_hours_then_days_newest_first(admin_client, rollups):
    seen, _ = _walk(admin_client)

    assert seen == _in_index_order(UsageRollup.objects.all())
    assert len(seen) == 48


def test_the_period_and_date_filters_stay_on_every_page(admin_client, rollups):
    since = START + timedelta(days=2)
    until = START + timedelta(days=5)
    # As the date filter's own links say it: aware times.
    query = urlencode({"period__exact": "day", "bucket_start__gte": str(since),
                       "bucket_start__lt": str(until)})

    seen, _ = _walk(admin_client, query)

    wanted = UsageRollup.objects.filter(period="day", bucket_start__gte=since,
                                        bucket_start__lt=until)
    assert seen == _in_index_order(wanted)
    assert len(seen) == 12  # three pages


def test_no_page_counts_dates_or_lists_distinct_values_of_the_table(admin_client, rollups):
    _, pages = _walk(admin_client)

    assert len(pages) == 12
    for queries in pages:
        on_table = [sql.upper() for sql in queries if "billing_usagerollup" in sql]
        assert on_table  # the page's rows
        for sql in on_table:
            assert "COUNT(" not in sql, sql
            assert "DISTINCT" not in sql, sql  # no date hierarchy, no model filter
            assert "MIN(" not in sql, sql
            assert "MAX(" not in sql, sql


@pytest.mark.skipif("connection.vendor != 'postgresql'",
                    reason="the plan of PostgreSQL is what is checked")
def test_a_page_is_read_through_the_period_and_bucket_index(rollups):
    order = UsageRollupAdmin.keyset_order

    plan = plan_of(lambda: keyset_page(UsageRollup.objects.all(), order=order, size=25))

    # Read backwards from the newest bucket; ties on a bucket are sorted by id in passing
    # (an incremental sort), never the whole table.
    assert "billing_usa_period_75d56d_idx" in str(plan)
    day = plan_of(lambda: keyset_page(UsageRollup.objects.filter(period="day"), order=order,
                                      size=25))
    assert "billing_usa_period_75d56d_idx" in str(day)
