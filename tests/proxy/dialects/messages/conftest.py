"""Fixtures for the Messages dialect: the official ``anthropic`` SDK pointed at the router,
and an Anthropic worker whose model allows a thinking budget (``max_tokens`` > 1024)."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import pytest

from billing.models import ModelPrice
from billing.services import price_set
from proxy.models import Worker
from tests.live_router import LiveRouter
from tests.proxy.anthropic.conftest import anthropic_upstream  # noqa: F401 - a fixture
from tests.proxy.anthropic.helpers import anthropic_worker_for
from tests.proxy.anthropic.samples import CACHED, INPUT, OUTPUT
from tests.proxy.anthropic.upstream import AnthropicServer


@pytest.fixture
def claude_price(transactional_db) -> ModelPrice:
    return price_set(model="claude-test", input_usd_per_mtok=INPUT,
                     output_usd_per_mtok=OUTPUT, cached_input_usd_per_mtok=CACHED,
                     max_output_tokens=4000)


@pytest.fixture
def anthropic_worker(anthropic_upstream: AnthropicServer,  # noqa: F811
                     claude_price: ModelPrice) -> Worker:
    return anthropic_worker_for(anthropic_upstream)


@pytest.fixture
def sdk_for(router: LiveRouter) -> Callable[[str], anthropic.Anthropic]:
    """The SDK as a user sets it up: it appends /v1/messages to the base URL itself. The
    router forwards the client's ``anthropic-version``; this SDK sends a newer one than the
    test server knows (it answers only 2023-06-01, like the API the adapter was written
    against), so the clients here say 2023-06-01."""

    def make(secret: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=router.url, api_key=secret, max_retries=0,
                                   timeout=20,
                                   default_headers={"anthropic-version": "2023-06-01"})

    return make
