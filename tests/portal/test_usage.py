from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.services.rollups import usage_rollup
from portal.views.usage import CSV_HEADER, PAGE_SIZE
from tests.portal.conftest import money_html

pytestmark = pytest.mark.django_db


def test_the_chart_shows_thirty_days_of_spend_and_tokens(member_client, member, make_usage):
    now = timezone.now()
    make_usage(member, cost_micros=3_000_000, prompt_tokens=1000, completion_tokens=500,
               at=now - timedelta(days=3))
    make_usage(member, cost_micros=1_000_000, prompt_tokens=200, completion_tokens=100)
    usage_rollup(since=now - timedelta(days=5), until=now)  # earlier days come from roll-ups

    response = member_client.get(reverse("portal:usage"))

    spend, tokens = response.context["spend_chart"], response.context["tokens_chart"]
    assert len(spend.columns) == len(tokens.columns) == 30
    heights = [sum(s.height for s in column.segments) for column in spend.columns]
    assert heights[-4] == pytest.approx(3 * heights[-1])
    assert heights[-1] > 0
    assert sum(1 for h in heights if h) == 2
    assert [s.css_class for s in tokens.columns[-4].segments] == ["bar-prompt",
                                                                 "bar-completion"]
    page = response.content.decode()
    assert page.count('class="bar bar-spend"') == 2
    assert "Spend $3.000000" in page  # the tooltip of the day
    assert f"2 requests, 1,800 tokens, {money_html(4_000_000)}." in page


def test_the_per_model_breakdown(member_client, member, make_usage):
    make_usage(member, model="test-model", cost_micros=2_000_000)
    make_usage(member, model="test-model", cost_micros=500_000)
    make_usage(member, model="cheap-model", cost_micros=10)

    rows = member_client.get(reverse("portal:usage")).context["by_model"]

    assert [(row.model, row.requests, row.cost_micros) for row in rows] == [
        ("test-model", 2, 2_500_000), ("cheap-model", 1, 10)]


def test_the_requests_table_is_paginated_newest_first(member_client, member, make_usage):
    now = timezone.now()
    records = [make_usage(member, at=now - timedelta(minutes=i)) for i in range(PAGE_SIZE + 3)]

    first = member_client.get(reverse("portal:usage"))
    older = first.context["links"].older
    second = member_client.get(reverse("portal:usage") + older).context["page"]

    assert [r.pk for r in first.context["page"].object_list] == [
        r.pk for r in records[:PAGE_SIZE]]
    assert [r.pk for r in second.object_list] == [r.pk for r in records[PAGE_SIZE:]]


def test_filters_narrow_the_table_by_model_key_status_and_dates(member_client, member,
                                                                make_key, make_usage):
    key = make_key(member, name="one")
    now = timezone.now()
    wanted = make_usage(member, api_key=key, model="test-model", status="ok",
                        at=now - timedelta(days=2))
    make_usage(member, api_key=key, model="other-model", at=now - timedelta(days=2))
    make_usage(member, api_key=None, model="test-model", at=now - timedelta(days=2))
    make_usage(member, api_key=key, model="test-model", status="cancelled",
               at=now - timedelta(days=2))
    make_usage(member, api_key=key, model="test-model", at=now - timedelta(days=9))
    day = (now - timedelta(days=2)).date().isoformat()

    response = member_client.get(reverse("portal:usage"), {
        "model": "test-model", "key": key.pk, "status": "ok", "since": day, "until": day})

    assert [r.pk for r in response.context["page"].object_list] == [wanted.pk]
    # Paging keeps the filters.
    assert f"key={key.pk}" in response.context["query"]


def test_a_bad_date_range_is_explained_and_shows_everything(member_client, member, make_usage):
    make_usage(member)

    response = member_client.get(reverse("portal:usage"),
                                 {"since": "2026-05-02", "until": "2026-05-01"})

    assert "The end date is before the start date." in response.content.decode()
    assert len(response.context["page"].object_list) == 1


# The test client reads responses synchronously; the export's iterator is asynchronous so
# that the ASGI server streams it, and Django warns that it reads it whole here.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous")
def test_the_csv_export_streams_the_filtered_records(member_client, member, make_key,
                                                     make_usage):
    key = make_key(member, name="=HYPERLINK(evil)")
    kept = make_usage(member, api_key=key, model="test-model", cost_micros=1_234_567,
                      prompt_tokens=11, completion_tokens=22)
    make_usage(member, api_key=key, model="other-model")

    response = member_client.get(reverse("portal:usage_csv"), {"model": "test-model"})
    body = b"".join(response)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == CSV_HEADER
    assert len(rows) == 2
    row = dict(zip(CSV_HEADER, rows[1], strict=True))
    assert row["request_id"] == kept.request_id
    assert row["model"] == "test-model"
    assert row["api_key"] == key.prefix
    assert row["api_key_name"] == "'=HYPERLINK(evil)"  # never a formula in a spreadsheet
    assert (row["prompt_tokens"], row["completion_tokens"]) == ("11", "22")
    assert row["cost_usd"] == "1.234567"
    assert row["status"] == "ok"


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous")
def test_the_table_and_the_csv_show_each_request_s_endpoint(member_client, member, make_usage):
    responses = make_usage(member, endpoint="responses")
    make_usage(member, endpoint="chat")

    page = member_client.get(reverse("portal:usage"), {"endpoint": "responses"})
    shown = page.content.decode()
    assert shown.count('data-testid="endpoint"') == 1
    assert "/v1/responses" in shown
    body = b"".join(member_client.get(reverse("portal:usage_csv"), {"endpoint": "responses"}))
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert [dict(zip(CSV_HEADER, row, strict=True))["endpoint"] for row in rows[1:]] == [
        "responses"]
    assert rows[1][CSV_HEADER.index("request_id")] == responses.request_id
