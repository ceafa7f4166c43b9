from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from billing.services import price_set
from portal.selectors_catalogue import catalogue_of
from proxy.models import Worker, WorkerModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def served():
    """Three priced models, served by one enabled worker, and one priced but not served."""
    worker = Worker.objects.create(name="w1", kind="mock")
    prices = {
        "alpha": price_set(model="alpha", input_usd_per_mtok="0.15", output_usd_per_mtok="0.6",
                           cached_input_usd_per_mtok="0.075", context_length=128_000,
                           max_output_tokens=16_384),
        "beta": price_set(model="beta", input_usd_per_mtok="3", output_usd_per_mtok="15",
                          cache_write_usd_per_mtok="3.75", max_output_tokens=8192),
        "embed": price_set(model="embed", input_usd_per_mtok="0.02", output_usd_per_mtok="0",
                           kind="embedding"),
    }
    for model in prices:
        WorkerModel.objects.create(worker=worker, model=model)
    price_set(model="unserved", input_usd_per_mtok="1", output_usd_per_mtok="1")
    return prices


def _rows(response) -> dict[str, str]:
    page = response.content.decode()
    rows = {}
    for chunk in page.split('data-testid="model-row" data-model="')[1:]:
        rows[chunk.split('"', 1)[0]] = chunk.split("</tr>", 1)[0]
    return rows


def test_it_lists_served_models_at_the_prices_of_their_rows(member_client, served):
    response = member_client.get(reverse("portal:models"))

    rows = _rows(response)
    assert sorted(rows) == ["alpha", "beta", "embed"]  # priced but unserved: not listed
    assert '<td class="num" data-testid="price-input">$0.15</td>' in rows["alpha"]
    assert '<td class="num" data-testid="price-output">$0.60</td>' in rows["alpha"]
    assert '<td class="num" data-testid="price-cached">$0.075</td>' in rows["alpha"]
    # No cache-write price set: 1.25x the input price, as a request is charged.
    assert '<td class="num" data-testid="price-cache-write">$0.1875</td>' in rows["alpha"]
    assert "128,000" in rows["alpha"]
    assert "16,384" in rows["alpha"]
    assert '<td class="num" data-testid="price-cache-write">$3.75</td>' in rows["beta"]
    assert '<td class="num" data-testid="price-cached">$3.00</td>' in rows["beta"]
    assert "<code>embeddings</code>" in rows["embed"]
    assert "<code>chat</code>" not in rows["embed"]
    assert "<code>messages</code>" in rows["beta"]


def test_a_disabled_worker_serves_nothing(member_client, served):
    Worker.objects.update(enabled=False)

    assert _rows(member_client.get(reverse("portal:models"))) == {}


def test_models_none_of_the_keys_allow_are_marked(member_client, member, make_key, served):
    make_key(member, allowed_models=["alpha"])
    make_key(member, allowed_models=["embed"])
    revoked = make_key(member)  # would allow everything, but is revoked
    api_key_revoke(prefix=revoked.prefix)

    rows = _rows(member_client.get(reverse("portal:models")))

    assert "not allowed by your keys" in rows["beta"]
    assert "not allowed by your keys" not in rows["alpha"]
    assert "not allowed by your keys" not in rows["embed"]
    assert {entry.name: entry.allowed for entry in catalogue_of(user=member)} == {
        "alpha": True, "beta": False, "embed": True}


def test_one_key_without_an_allow_list_allows_every_model(member, make_key, served):
    make_key(member, allowed_models=["alpha"])
    make_key(member)
    expired = make_key(member, allowed_models=["embed"])
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now())

    assert all(entry.allowed for entry in catalogue_of(user=member))


def test_a_user_without_keys_sees_every_model_allowed(member, served):
    assert all(entry.allowed for entry in catalogue_of(user=member))


def test_the_estimate_is_the_charge_for_those_tokens(member_client, served):
    response = member_client.get(reverse("portal:models"),
                                 {"model": "alpha", "prompt_tokens": 1000,
                                  "completion_tokens": 7})

    # 1000 x 0.15 + 7 x 0.6 = 154.2 micro-USD, rounded up once: 155.
    assert response.context["estimate_micros"] == 155
    assert served["alpha"].cost_micros(prompt_tokens=1000, completion_tokens=7) == 155
    page = response.content.decode()
    estimate = page.split('data-testid="estimate">', 1)[1].split("</output>", 1)[0]
    assert "$0.000155" in estimate
    # The estimator's prices in whole pico-USD per token, for integer arithmetic.
    assert 'value="alpha" data-input="150000" data-output="600000"' in page
    assert '<script src="/static/portal/estimator.js" defer></script>' in page


def test_the_snippets_call_the_chosen_model_at_this_routers_base_url(member_client, served):
    page = member_client.get(reverse("portal:models"), {"model": "beta"}).content.decode()

    assert "http://testserver/v1/chat/completions" in page
    assert '"model": "beta"' in page
    assert 'model="beta"' in page
    assert 'model: "beta"' in page
    assert 'base_url="http://testserver/v1"' in page
    assert 'baseURL: "http://testserver/v1"' in page

    page = member_client.get(reverse("portal:models"), {"model": "embed"}).content.decode()
    assert "http://testserver/v1/embeddings" in page
    assert "client.embeddings.create" in page


def test_a_bad_token_count_is_said_not_crashed(member_client, served):
    response = member_client.get(reverse("portal:models"),
                                 {"model": "alpha", "prompt_tokens": "-5"})

    assert response.status_code == 200
    assert response.context["prompt_tokens"] == 1000  # the default, not the refused value
    assert "field-error" in response.content.decode()


def test_the_page_needs_a_sign_in(client):
    response = client.get(reverse("portal:models"))

    assert response.status_code == 302
