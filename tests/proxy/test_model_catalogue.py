"""/v1/models tells a prepaid user what a model costs: its prices per token (exact decimal
text, equal to the price rows), its limits and the endpoints that serve it."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from billing.models import ModelPrice
from billing.services import price_set
from proxy.models import WorkerModel
from tests.openai_schema import validate

MILLION = Decimal(1_000_000)


@pytest.fixture
def priced(openai_worker) -> list[ModelPrice]:
    """test-model (cached price set, no cache-write price) and an embedding model with both."""
    chat = price_set(model="test-model", input_usd_per_mtok="0.15", output_usd_per_mtok="0.6",
                     cached_input_usd_per_mtok="0.075", context_length=128_000,
                     max_output_tokens=16_384)
    embed = price_set(model="embed-small", input_usd_per_mtok="0.02", output_usd_per_mtok="0",
                      cache_write_usd_per_mtok="0.03", kind="embedding")
    WorkerModel.objects.create(worker=openai_worker, model="embed-small")
    return [chat, embed]


def _listed(router, secret: str) -> dict[str, dict]:
    response = httpx.get(f"{router.base_url}/models",
                         headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    validate(response.json(), "ListModelsResponse")  # OpenAI's schema allows the extra fields
    return {model["id"]: model for model in response.json()["data"]}


def test_prices_on_the_wire_equal_the_price_rows_exactly(router, make_key, priced):
    listed = _listed(router, make_key()[1])

    for price in priced:
        shown = listed[price.model]
        per_million = {name: Decimal(value) * MILLION
                       for name, value in shown["pricing"].items()}
        assert per_million == {"prompt": price.input_usd_per_mtok,
                               "completion": price.output_usd_per_mtok,
                               "input_cache_read": price.cached_price,
                               "input_cache_write": price.cache_write_price}
        assert all("e" not in value.lower() for value in shown["pricing"].values())
        assert shown["max_output_tokens"] == price.max_output_tokens
        assert shown["context_length"] == price.context_length
    assert listed["test-model"]["pricing"] == {
        "prompt": "0.00000015", "completion": "0.0000006", "input_cache_read": "0.000000075",
        "input_cache_write": "0.0000001875"}  # no cache-write price: 1.25x input
    assert listed["test-model"]["endpoints"] == ["chat", "responses", "messages",
                                                 "completions"]
    assert listed["embed-small"]["endpoints"] == ["embeddings"]
    assert listed["embed-small"]["context_length"] is None  # unknown, not made up


def test_the_openai_sdk_still_parses_the_models_with_their_prices(router, make_key, priced,
                                                                   client_for):
    client = client_for(make_key()[1])

    models = {model.id: model for model in client.models.list()}
    assert set(models) == {"test-model", "embed-small"}
    one = client.models.retrieve("test-model")
    assert one.owned_by == "binom-router"
    assert one.model_extra["pricing"]["prompt"] == "0.00000015"
    assert one.model_extra["context_length"] == 128_000


def test_a_new_price_version_is_what_the_models_show(router, make_key, priced):
    from tests.live_router import forget_shared_state

    price_set(model="test-model", input_usd_per_mtok="0.2", output_usd_per_mtok="0.8")
    forget_shared_state()  # what ROUTER_LOOKUP_TTL_SECONDS does on its own

    shown = _listed(router, make_key()[1])["test-model"]
    assert shown["pricing"]["prompt"] == "0.0000002"
    # What the new version does not say, it keeps from the one before.
    assert (shown["context_length"], shown["max_output_tokens"]) == (128_000, 16_384)
