"""The worker admin's flags of a misbehaving upstream: output cut at the cap, charges capped
at the hold and usage not believed, counted from the usage records per worker."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from billing.models import ModelPrice, UsageRecord
from proxy.services import worker_create
from tests.proxy.workers_admin.helpers import add_url, change_url, changelist, row_of, usage

pytestmark = pytest.mark.django_db


def flagged(user: User, price: ModelPrice, worker: str, *, age: timedelta | None = None,
            **flags: object) -> UsageRecord:
    record = usage(user, price, worker, age=age)
    UsageRecord.objects.filter(pk=record.pk).update(**flags)
    return record


def flags_link(row: str) -> str:
    (href,) = re.findall(r'field-recent_flags"><a href="([^"]+)"', row)
    return html.unescape(href)


def test_the_changelist_counts_each_workers_flagged_requests_of_the_last_day(
    staff_client, worker, user, price
):
    worker_create(name="clean", kind="mock", models=[("m", "")])
    counted = [flagged(user, price, "up", over_cap=True) for _ in range(3)]
    counted.append(flagged(user, price, "up", estimate_reason="no_usage"))
    flagged(user, price, "up", estimate_reason="incomplete")  # the client left: not the upstream
    flagged(user, price, "up", over_cap=True, age=timedelta(hours=25))  # too old
    usage(user, price, "clean")

    response = changelist(staff_client)

    up = row_of(response, "up")
    assert ">3 over cap · 1 bad usage</a>" in up
    assert 'title="No usage reported: 1"' in up
    assert '<td class="field-recent_flags">—</td>' in row_of(response, "clean")
    records = staff_client.get(flags_link(up)).context["cl"].result_list
    assert {record.pk for record in records} == {record.pk for record in counted}


def test_the_flags_cost_one_query_for_any_number_of_workers(staff_client, worker, user,
                                                             price):
    flagged(user, price, "up", over_hold=True)
    with CaptureQueriesContext(connection) as one:
        changelist(staff_client)
    for i in range(5):
        worker_create(name=f"more{i}", kind="mock", models=[("m", "")])
        flagged(user, price, f"more{i}", over_cap=True)
        flagged(user, price, f"more{i}", estimate_reason="malformed")

    with CaptureQueriesContext(connection) as six:
        response = changelist(staff_client)

    assert len(response.context["cl"].result_list) == 6
    assert len(six) == len(one)
    assert sum('"over_hold"' in q["sql"] for q in six.captured_queries) == 1
    assert ">1 over cap · 1 bad usage</a>" in row_of(response, "more4")


def test_the_change_page_shows_the_flags_of_the_last_day_and_week_by_reason(
    staff_client, worker, user, price
):
    flagged(user, price, "up", over_cap=True, estimate_reason="completion_above_cap")
    flagged(user, price, "up", over_hold=True, age=timedelta(days=2))
    flagged(user, price, "up", estimate_reason="malformed", age=timedelta(days=3))
    flagged(user, price, "up", estimate_reason="malformed", age=timedelta(days=8))  # too old
    flagged(user, price, "elsewhere", over_cap=True)

    response = staff_client.get(change_url(worker))

    text = re.sub(r"\s+", " ", response.content.decode())
    assert "<th>Last 24 h</th><th>Last 7 days</th>" in text
    assert "output cut at the request&#x27;s cap</td><td>1</td><td>1</td>" in text
    assert "charged the hold, not the usage</td><td>0</td><td>1</td>" in text
    assert "count not believed</td><td>1</td><td>2</td>" in text
    assert ">Output count above the cap</td><td>1</td><td>1</td>" in text
    assert ">Usage malformed</td><td>0</td><td>1</td>" in text
    assert ">No usage reported</td><td>0</td><td>0</td>" in text
    assert "worker=up&amp;flagged=any&amp;created_at__gte=" in text


def test_the_add_page_has_no_flags(staff_client):
    response = staff_client.get(add_url())

    assert response.status_code == 200
    assert "Flagged usage" not in response.content.decode()
