from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.services import api_key_create
from billing.models import UsageRecord
from billing.selectors import (
    UsageFilters,
    WorkerUsageFlags,
    api_key_spend_of,
    usage_by_model,
    usage_daily,
    usage_flags_by_worker,
    usage_records_of,
    usage_spend_summary,
)
from billing.services.rollups import usage_rollup

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
_ids = itertools.count(1)


@pytest.fixture
def record(price):
    def make(user, *, at: datetime, cost: int, model: str = "test-model", api_key=None,
             status: str = UsageRecord.Status.OK, prompt: int = 10,
             completion: int = 5, **fields: Any) -> UsageRecord:
        usage = UsageRecord.objects.create(
            request_id=f"req-{next(_ids)}", user=user, api_key=api_key, model=model,
            price=price, prompt_tokens=prompt, completion_tokens=completion,
            cost_micros=cost, status=status, **fields)
        # created_at is set on insert; move it to the moment the test needs.
        UsageRecord.objects.filter(pk=usage.pk).update(created_at=at)
        usage.created_at = at
        return usage

    return make


def _roll_up_everything() -> None:
    usage_rollup(since=NOW - timedelta(days=60), until=NOW)


def test_the_summary_counts_today_exactly_and_the_month_through_the_rollups(user, record):
    record(user, at=NOW - timedelta(hours=1), cost=100)
    record(user, at=NOW.replace(hour=0, minute=0), cost=20)
    record(user, at=NOW - timedelta(days=3), cost=1_000)           # this month, rolled up
    record(user, at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC), cost=50_000)  # last month
    _roll_up_everything()
    record(user, at=NOW - timedelta(minutes=1), cost=3)           # after the roll-up ran

    summary = usage_spend_summary(user=user, now=NOW)

    assert summary.today_micros == 123
    assert summary.requests_today == 3
    assert summary.month_micros == 1_123


def test_the_daily_series_has_thirty_days_oldest_first_with_zeros(user, record):
    record(user, at=NOW - timedelta(days=29), cost=7, prompt=1, completion=2)
    record(user, at=NOW - timedelta(days=30), cost=999)  # outside the window
    record(user, at=NOW - timedelta(days=2), cost=5)
    record(user, at=NOW - timedelta(days=2, hours=1), cost=6)
    _roll_up_everything()
    record(user, at=NOW, cost=4)

    days = usage_daily(user=user, now=NOW)

    assert len(days) == 30
    assert days[0].day == (NOW - timedelta(days=29)).date()
    assert days[-1].day == NOW.date()
    assert (days[0].cost_micros, days[0].prompt_tokens, days[0].completion_tokens) == (7, 1, 2)
    assert days[-3].cost_micros == 11
    assert days[-3].requests == 2
    assert days[-1].cost_micros == 4
    assert days[-1].requests == 1
    assert sum(day.cost_micros for day in days) == 22


def test_the_model_breakdown_merges_rollups_and_today_costliest_first(user, record):
    record(user, at=NOW - timedelta(days=1), cost=10, model="a")
    record(user, at=NOW - timedelta(days=1), cost=30, model="b")
    _roll_up_everything()
    record(user, at=NOW, cost=25, model="a")

    rows = usage_by_model(user=user, now=NOW)

    assert [(row.model, row.cost_micros, row.requests) for row in rows] == [
        ("a", 35, 2), ("b", 30, 1)]


def test_key_spend_and_records_are_the_users_own_only(user, make_user, record):
    other = make_user()
    mine = api_key_create(user=user, name="mine").api_key
    theirs = api_key_create(user=other, name="theirs").api_key
    record(user, at=NOW - timedelta(days=5), cost=40, api_key=mine)
    record(other, at=NOW - timedelta(days=5), cost=70, api_key=theirs)
    _roll_up_everything()
    record(user, at=NOW, cost=2, api_key=mine, status=UsageRecord.Status.CANCELLED)

    assert api_key_spend_of(user=user, now=NOW) == {mine.pk: 42}
    assert [r.cost_micros for r in usage_records_of(user=user)] == [2, 40]
    assert list(usage_records_of(user=user, filters=UsageFilters(api_key_id=theirs.pk))) == []


def test_record_filters_narrow_by_model_key_status_and_time(user, record):
    key = api_key_create(user=user).api_key
    a = record(user, at=NOW - timedelta(days=2), cost=1, model="a", api_key=key)
    b = record(user, at=NOW - timedelta(days=1), cost=2, model="b",
               status=UsageRecord.Status.UPSTREAM_ERROR)
    c = record(user, at=NOW, cost=3, model="a")

    def ids(**filters) -> list[int]:
        return [r.pk for r in usage_records_of(user=user, filters=UsageFilters(**filters))]

    assert ids() == [c.pk, b.pk, a.pk]
    assert ids(model="a") == [c.pk, a.pk]
    assert ids(api_key_id=key.pk) == [a.pk]
    assert ids(status=UsageRecord.Status.UPSTREAM_ERROR) == [b.pk]
    assert ids(since=NOW - timedelta(days=1, hours=1), until=NOW) == [b.pk]


# --- flags of a misbehaving upstream, per worker ------------------------------------------

def test_the_flags_count_only_flagged_records_since_the_moment_per_worker_and_reason(
    user, record
):
    since = NOW - timedelta(hours=24)
    for reason in ("no_usage", "no_usage", "malformed"):
        record(user, at=NOW, cost=1, worker="up", estimate_reason=reason)
    record(user, at=NOW, cost=1, worker="up", over_cap=True,
           estimate_reason="completion_above_cap")
    record(user, at=NOW, cost=1, worker="up", over_cap=True)
    record(user, at=NOW, cost=1, worker="up", over_hold=True)
    record(user, at=NOW, cost=1, worker="up", estimate_reason="incomplete")  # the client left
    record(user, at=NOW, cost=1, worker="up", estimate_reason="settle_error")  # our failure
    record(user, at=NOW, cost=1, worker="up")  # the upstream's usage, believed
    record(user, at=since - timedelta(seconds=1), cost=1, worker="up", over_cap=True)  # old
    record(user, at=since, cost=1, worker="other", estimate_reason="prompt_implausible")
    record(user, at=NOW, cost=1, worker="quiet", estimate_reason="incomplete")

    flags = usage_flags_by_worker(since=since)

    assert flags == {
        "up": WorkerUsageFlags(over_cap=2, over_hold=1, bad_usage_by_reason={
            "no_usage": 2, "malformed": 1, "completion_above_cap": 1}),
        "other": WorkerUsageFlags(bad_usage_by_reason={"prompt_implausible": 1}),
    }
    assert flags["up"].bad_usage == 4
    assert flags["up"].any
    assert not WorkerUsageFlags().any


def test_the_flags_of_the_named_workers_take_one_query(user, record,
                                                       django_assert_num_queries):
    for worker in ("a", "b", "c"):
        record(user, at=NOW, cost=1, worker=worker, over_hold=True)

    with django_assert_num_queries(1):
        flags = usage_flags_by_worker(since=NOW - timedelta(days=7), workers=["a", "c", "x"])
    with django_assert_num_queries(0):
        assert usage_flags_by_worker(since=NOW - timedelta(days=7), workers=[]) == {}

    assert set(flags) == {"a", "c"}


def test_the_flags_query_can_be_served_by_the_partial_index(user, record):
    record(user, at=NOW, cost=1, worker="up", over_cap=True)
    with CaptureQueriesContext(connection) as queries:
        usage_flags_by_worker(since=NOW - timedelta(days=1), workers=["up"])
    (query,) = queries.captured_queries

    # With sequential scans ruled out, the planner picks the partial index only if the query's
    # WHERE clause implies the index's predicate.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {query['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        # On PostgreSQL the table is partitioned by month (billing 0021): each partition
        # has its own copy of the index, named after the partition.
        cursor.execute("SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c "
                       "ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = 'billing_usage_flagged'::regclass")
        copies = {name for (name,) in cursor.fetchall()}

    assert "billing_usage_flagged" in plan or copies & set(re.findall(r"using (\S+)", plan)), plan
