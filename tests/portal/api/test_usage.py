"""Usage over the API: the records with filters, as JSON pages or CSV, and the sums."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta
from unittest import mock

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from billing.services.rollups import usage_rollup


@pytest.fixture
def history(member, make_key, make_usage):
    """Five requests over three days, two keys, two models, one cancelled."""
    now = timezone.now()
    a, b = make_key(member, name="a"), make_key(member, name="b")
    records = [
        make_usage(member, api_key=a, cost_micros=1_000_001, model="m1", at=now),
        make_usage(member, api_key=a, cost_micros=20, model="m2", at=now - timedelta(days=1),
                   status=UsageRecord.Status.CANCELLED),
        make_usage(member, api_key=b, cost_micros=300, model="m1",
                   at=now - timedelta(days=1, minutes=30), prompt_tokens=7, completion_tokens=3),
        make_usage(member, api_key=b, cost_micros=4_000, model="m2", at=now - timedelta(days=2)),
        make_usage(member, api_key=None, cost_micros=5, model="m1", at=now - timedelta(days=40)),
    ]
    # Days before today are read from the roll-ups, as the beat job keeps them.
    usage_rollup(since=now - timedelta(days=60), until=now + timedelta(seconds=1))
    return {"a": a, "b": b, "records": records, "now": now}


def _ids(response) -> list[str]:
    return [row["request_id"] for row in response.json()["results"]]


def test_the_list_is_newest_first_and_each_filter_narrows_it(api, history):
    r = history["records"]
    day_ago = (history["now"] - timedelta(days=1, hours=1)).isoformat()

    assert _ids(api.get("/api/usage")) == [x.request_id for x in r]
    assert _ids(api.get("/api/usage", {"model": "m1"})) == [r[0].request_id, r[2].request_id,
                                                             r[4].request_id]
    assert _ids(api.get("/api/usage", {"key": history["b"].pk})) == [r[2].request_id,
                                                                     r[3].request_id]
    assert _ids(api.get("/api/usage", {"status": "cancelled"})) == [r[1].request_id]
    assert _ids(api.get("/api/usage", {"since": day_ago})) == [x.request_id for x in r[:3]]
    assert _ids(api.get("/api/usage", {"until": day_ago})) == [r[3].request_id,
                                                               r[4].request_id]
    assert _ids(api.get("/api/usage", {"model": "m1", "key": history["a"].pk})) == [
        r[0].request_id]


def test_a_record_carries_its_key_tokens_and_exact_cost(api, history):
    row = api.get("/api/usage", {"key": history["b"].pk, "model": "m1"}).json()["results"][0]

    assert row["key_id"] == history["b"].pk
    assert row["key_prefix"] == history["b"].prefix
    assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 3)
    assert row["cost_micros"] == 300
    assert row["cost_usd"] == "0.000300"
    assert row["status"] == "ok"
    assert row["latency_ms"] == 120
    assert "worker" not in row  # which upstream served it is the operator's business


def test_bad_filters_are_400s_that_name_the_field(api, history):
    response = api.get("/api/usage", {"status": "great", "since": "yesterday", "key": "x"})

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"status", "since", "key"}
    backwards = api.get("/api/usage", {"since": "2026-01-02", "until": "2026-01-01"})
    assert backwards.json()["error"]["fields"] == {"until": ["Must be after since."]}


def test_the_csv_export_has_every_matching_row(api, history):
    for response in (api.get("/api/usage", {"format": "csv", "model": "m2"}),
                     api.get("/api/usage", {"model": "m2"}, HTTP_ACCEPT="text/csv")):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(b"".join(response).decode())))
        assert [row["request_id"] for row in rows] == [history["records"][1].request_id,
                                                       history["records"][3].request_id]
        assert rows[1]["cost_usd"] == "0.004000"
        assert rows[1]["key_prefix"] == history["b"].prefix


def test_an_error_asked_for_as_csv_is_still_json(api, history):
    response = api.get("/api/usage", {"format": "csv", "status": "nope"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["status"]


def test_daily_sums_equal_the_records_of_each_day(api, history):
    # The days are counted back from the moment the records were made, not from the
    # request's clock: a UTC midnight between the two would move every day on by one.
    with mock.patch("django.utils.timezone.now", return_value=history["now"]):
        days = api.get("/api/usage/daily", {"days": 3}).json()

    today = history["now"].astimezone(UTC).date()
    assert [day["day"] for day in days] == [
        str(today - timedelta(days=n)) for n in (2, 1, 0)]
    for day in days:
        records = [r for r in history["records"]
                   if r.created_at.astimezone(UTC).date().isoformat() == day["day"]]
        assert day["requests"] == len(records)
        assert day["cost_micros"] == sum(r.cost_micros for r in records)
        assert day["prompt_tokens"] == sum(r.prompt_tokens for r in records)
    assert days[-1]["cost_usd"] == "1.000001"


def test_per_model_sums_equal_the_records_costliest_first(api, history):
    rows = api.get("/api/usage/models", {"days": 30}).json()

    recent = history["records"][:4]  # the fifth is 40 days old
    assert [row["model"] for row in rows] == ["m1", "m2"]
    for row in rows:
        mine = [r for r in recent if r.model == row["model"]]
        assert row["requests"] == len(mine)
        assert row["cost_micros"] == sum(r.cost_micros for r in mine)
        assert row["completion_tokens"] == sum(r.completion_tokens for r in mine)


@pytest.mark.parametrize("days", ["0", "367", "-1", "x"])
def test_days_out_of_range_is_a_400(api, days):
    for path in ("/api/usage/daily", "/api/usage/models"):
        response = api.get(path, {"days": days})
        assert response.status_code == 400
        assert "days" in response.json()["error"]["fields"]


def test_thirty_days_is_the_default(api, history):
    assert len(api.get("/api/usage/daily").json()) == 30


def test_each_record_says_its_endpoint_and_the_list_filters_by_it(api, member, make_usage):
    messages = make_usage(member, endpoint=UsageRecord.Endpoint.MESSAGES, prompt_tokens=100,
                          cache_write_tokens=40)
    make_usage(member, endpoint=UsageRecord.Endpoint.EMBEDDINGS)

    rows = api.get("/api/usage", {"endpoint": "messages"}).json()["results"]
    assert [(r["request_id"], r["endpoint"], r["cache_write_tokens"]) for r in rows] == [
        (messages.request_id, "messages", 40)]
    csv_rows = list(csv.DictReader(io.StringIO(b"".join(
        api.get("/api/usage", {"format": "csv", "endpoint": "messages"})).decode())))
    assert [(r["endpoint"], r["cache_write_tokens"]) for r in csv_rows] == [("messages", "40")]
    assert api.get("/api/usage", {"endpoint": "fax"}).status_code == 400
