"""An embedding model served by the mock worker and by an OpenAI-compatible upstream."""

from __future__ import annotations

import pytest

from billing.models import ModelPrice
from billing.services import price_set
from proxy.models import Worker, WorkerModel
from tests.proxy.dialects.legacy_upstream import LegacyUpstream, legacy_upstream  # noqa: F401

# 3 micro-USD per input token, and an output price that must never be charged.
INPUT_MICROS = 3


@pytest.fixture
def embedding_price(transactional_db) -> ModelPrice:
    return price_set(model="embed-model", input_usd_per_mtok=str(INPUT_MICROS),
                     output_usd_per_mtok="50", kind="embedding")


@pytest.fixture
def mock_embedder(embedding_price: ModelPrice) -> Worker:
    worker = Worker.objects.create(name="mock-embedder", kind="mock")
    WorkerModel.objects.create(worker=worker, model="embed-model")
    return worker


@pytest.fixture
def upstream_embedder(legacy_upstream: LegacyUpstream,  # noqa: F811
                      embedding_price: ModelPrice) -> Worker:
    worker = Worker(name="openai-embedder", kind="openai", base_url=legacy_upstream.base_url)
    worker.set_api_key("upstream-secret")
    worker.save()
    WorkerModel.objects.create(worker=worker, model="embed-model",
                               upstream_model="text-embedding-3-small")
    return worker
