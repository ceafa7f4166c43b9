"""``test-model`` (1 and 2 micro-USD per input and output token) served natively by an
OpenAI-compatible upstream that speaks /v1/completions, and ``mock-model`` (the same
prices) by the mock worker, which is translated to."""

from __future__ import annotations

import pytest

from billing.models import ModelPrice
from billing.services import price_set
from proxy.models import Worker, WorkerModel
from tests.proxy.dialects.legacy_upstream import LegacyUpstream, legacy_upstream  # noqa: F401


@pytest.fixture
def native_worker(legacy_upstream: LegacyUpstream,  # noqa: F811
                  model_price: ModelPrice) -> Worker:
    worker = Worker(name="instruct", kind="openai", base_url=legacy_upstream.base_url)
    worker.set_api_key("upstream-secret")
    worker.save()
    WorkerModel.objects.create(worker=worker, model="test-model",
                               upstream_model="gpt-3.5-turbo-instruct")
    return worker


@pytest.fixture
def mock_worker(transactional_db) -> Worker:
    price_set(model="mock-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
              max_output_tokens=500)
    worker = Worker.objects.create(name="mock", kind="mock")
    WorkerModel.objects.create(worker=worker, model="mock-model")
    return worker
