from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import UsageRecord
from billing.services import price_set
from tests.portal.api.conftest import session_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def record(member, make_key) -> UsageRecord:
    price = price_set(model="frac-model", input_usd_per_mtok="0.15",
                      output_usd_per_mtok="0.6", cached_input_usd_per_mtok="0.075")
    tokens = {"prompt_tokens": 1001, "cached_tokens": 333, "cache_write_tokens": 17,
              "completion_tokens": 77}
    return UsageRecord.objects.create(
        request_id="req-api-1", user=member, api_key=make_key(member, name="ci runner"),
        model="frac-model", price=price, cost_micros=price.cost_micros(**tokens),
        latency_ms=900, ttft_ms=80, upstream_cost_micros=55_555, **tokens)


def test_it_returns_the_pages_figures(api, record):
    response = api.get("/api/usage/req-api-1")

    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == "req-api-1"
    assert body["key_name"] == "ci runner"
    assert body["key_prefix"] == record.api_key.prefix
    assert body["endpoint"] == "chat"
    assert body["status"] == "ok"
    assert body["source"] == "provider"
    assert body["estimate_reason"] == ""
    assert (body["latency_ms"], body["ttft_ms"]) == (900, 80)
    assert body["price"] == {
        "id": record.price_id, "model": "frac-model",
        "effective_from": body["price"]["effective_from"],
        "input_usd_per_mtok": "0.150000", "output_usd_per_mtok": "0.600000",
        "cached_input_usd_per_mtok": "0.075000",
        "cache_write_usd_per_mtok": body["price"]["cache_write_usd_per_mtok"]}
    # Unset: 1.25x the input price, exact rather than cut to six decimals.
    assert Decimal(body["price"]["cache_write_usd_per_mtok"]) == Decimal("0.1875")
    breakdown = body["cost_breakdown"]
    parts = {part["kind"]: part for part in breakdown["parts"]}
    assert {kind: part["tokens"] for kind, part in parts.items()} == {
        "input": 651, "cached": 333, "cache_write": 17, "output": 77}
    exact = sum(Decimal(part["cost_usd_exact"]) for part in parts.values())
    assert Decimal(breakdown["exact_total_usd"]) == exact == Decimal("0.0001720125")
    assert breakdown["charged_micros"] == body["cost_micros"] == record.cost_micros == 173
    assert breakdown["charged_usd"] == body["cost_usd"] == "0.000173"
    assert Decimal(breakdown["charged_usd"]) - exact == Decimal(breakdown["rounding_usd"])
    assert "upstream_cost_micros" not in body
    assert "55555" not in response.content.decode()


def test_another_users_request_is_a_404(client_for, other, record):
    response = client_for(other).get("/api/usage/req-api-1")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert session_client(other).get("/api/usage/never").status_code == 404


def test_the_list_routes_still_answer(api, record):
    assert api.get("/api/usage/daily").status_code == 200
    assert api.get("/api/usage/models").status_code == 200
