from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing.models import ModelPrice
from billing.services import price_set
from proxy.models import Worker
from tests.proxy.anthropic.helpers import anthropic_worker_for
from tests.proxy.anthropic.samples import CACHED, INPUT, OUTPUT
from tests.proxy.anthropic.upstream import AnthropicServer


@pytest.fixture
def anthropic_upstream() -> Iterator[AnthropicServer]:
    """A running Anthropic server that wants the key ``sk-ant-test``."""
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def claude_price(transactional_db) -> ModelPrice:
    return price_set(model="claude-test", input_usd_per_mtok=INPUT,
                     output_usd_per_mtok=OUTPUT, cached_input_usd_per_mtok=CACHED,
                     max_output_tokens=1000)



@pytest.fixture
def anthropic_worker(anthropic_upstream: AnthropicServer, claude_price) -> Worker:
    return anthropic_worker_for(anthropic_upstream)
