from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import UsageRecord
from billing.services import price_set
from portal.selectors_catalogue import cost_breakdown

pytestmark = pytest.mark.django_db


@pytest.fixture
def priced_record(member, make_key):
    """A request at a price whose every kind of token costs a fraction of a micro-USD, so
    the parts only add up to the charge through the one rounding up."""
    price = price_set(model="frac-model", input_usd_per_mtok="0.15",
                      output_usd_per_mtok="0.6", cached_input_usd_per_mtok="0.075",
                      cache_write_usd_per_mtok="0.1875")
    tokens = {"prompt_tokens": 1001, "cached_tokens": 333, "cache_write_tokens": 17,
              "completion_tokens": 77}
    key = make_key(member, name="ci runner")
    return UsageRecord.objects.create(
        request_id="req-detail-1", user=member, api_key=key, model="frac-model", price=price,
        cost_micros=price.cost_micros(**tokens), endpoint=UsageRecord.Endpoint.MESSAGES,
        source=UsageRecord.Source.ESTIMATED, estimate_reason="no_usage", latency_ms=1234,
        ttft_ms=321, upstream_cost_micros=987_654, **tokens)


def test_the_breakdown_adds_up_to_the_charge(priced_record):
    breakdown = cost_breakdown(priced_record)

    exact = {part.kind: part.exact_micros for part in breakdown.parts}
    assert exact == {"input": 651 * Decimal("0.15"), "cached": 333 * Decimal("0.075"),
                     "cache_write": 17 * Decimal("0.1875"), "output": 77 * Decimal("0.6")}
    assert breakdown.exact_micros == Decimal("172.0125")
    assert priced_record.cost_micros == 173
    assert breakdown.matches_charge
    assert 0 <= breakdown.rounding_micros < 1


def test_the_page_shows_the_request_its_price_and_its_cost(member_client, priced_record):
    response = member_client.get(reverse("portal:usage_detail", args=["req-detail-1"]))

    assert response.status_code == 200
    page = response.content.decode()
    created = priced_record.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert f"{created}Z</time>" in page
    assert "Time (UTC)" in page
    assert "/v1/messages" in page
    assert "ci runner <code>" + priced_record.api_key.prefix in page
    assert "Counted by the router: No usage reported" in page
    assert "1,234 ms" in page
    assert "321 ms" in page
    rows = {part: page.split(f'data-testid="part-{part}">', 1)[1].split("</tr>", 1)[0]
            for part in ("input", "cached", "cache_write", "output")}
    assert "651" in rows["input"]
    assert "$0.15" in rows["input"]
    assert "$0.00009765" in rows["input"]  # 651 x 0.15 micro-USD, exactly
    assert "333" in rows["cached"]
    assert "$0.075" in rows["cached"]
    assert "$0.1875" in rows["cache_write"]
    assert "$0.0000031875" in rows["cache_write"]
    assert "$0.0000462" in rows["output"]
    assert 'data-testid="exact-total">$0.0001720125<' in page
    assert "173 micro-USD" in page
    assert "0.000173" in page
    assert "987" not in page  # the upstream's cost is ours, not the user's


def test_a_charge_capped_at_the_hold_is_said(member_client, priced_record):
    UsageRecord.objects.filter(pk=priced_record.pk).update(cost_micros=150, over_hold=True)

    page = member_client.get(reverse("portal:usage_detail",
                                     args=["req-detail-1"])).content.decode()

    assert 'data-testid="over-hold"' in page


def test_another_users_request_is_a_404(client, other, priced_record):
    client.force_login(other)

    response = client.get(reverse("portal:usage_detail", args=["req-detail-1"]))

    assert response.status_code == 404
    assert client.get(reverse("portal:usage_detail", args=["never"])).status_code == 404


def test_the_usage_list_links_each_request_to_its_page(member_client, priced_record):
    page = member_client.get(reverse("portal:usage")).content.decode()

    assert 'href="/usage/req-detail-1/"' in page
