from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import openai
import pytest
import redis

from accounts.services import api_key_create, user_create
from billing.models import ModelPrice
from billing.services import price_set, wallet_credit
from proxy.ground import shared_state
from proxy.limits import reset_local_limits
from proxy.models import Worker, WorkerModel
from proxy.money import refusals
from tests.live_router import LiveRouter, forget_shared_state
from tests.proxy.own_cluster import cluster  # noqa: F401 - a fixture
from tests.proxy.upstream import UpstreamServer, upstream  # noqa: F401 - a fixture

_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def _fresh_lookups() -> Iterator[None]:
    # Cached keys, prices and workers, and breaker and capacity state, must not leak from
    # one test's database to the next.
    forget_shared_state()
    yield
    forget_shared_state()


@pytest.fixture
def refusals_in_one_minute(monkeypatch) -> type[datetime]:
    """Refusals are counted per key and minute: the test's refusals all fall in the minute it
    started in however long they take (a test may move ``.minute`` on), or a run that crosses
    a minute's turn counts them in two groups, as the router should, and a test expecting one
    group fails (CI did, once)."""

    class ThisMinute(datetime):
        minute = datetime.now(UTC).replace(second=0, microsecond=0)

        @classmethod
        def now(cls, tz=None) -> datetime:
            return cls.minute

    monkeypatch.setattr(refusals, "datetime", ThisMinute)
    return ThisMinute


@pytest.fixture
def redis_db(settings) -> Iterator[redis.Redis]:
    """The test Redis database, empty, with the process's shared state and local limits
    forgotten before and after."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis")
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    client.flushdb()
    shared_state.reset_for_tests()
    reset_local_limits()
    yield client
    client.flushdb()
    client.close()
    shared_state.reset_for_tests()
    reset_local_limits()


@pytest.fixture
def model_price(transactional_db) -> ModelPrice:
    # 1 and 2 micro-USD per input and output token; cached input at 0.5.
    return price_set(model="test-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
                     cached_input_usd_per_mtok="0.5", max_output_tokens=500)


@pytest.fixture
def openai_worker(upstream: UpstreamServer, model_price: ModelPrice) -> Worker:  # noqa: F811
    worker = Worker(name=f"local-{next(_ids)}", kind="openai", base_url=upstream.base_url)
    worker.set_api_key("upstream-secret")
    worker.save()
    WorkerModel.objects.create(worker=worker, model="test-model", upstream_model="gpt-4o-mini")
    return worker


@pytest.fixture
def make_key(transactional_db) -> Callable[..., tuple[int, str]]:
    """A user with ``credit_micros`` and an API key: returns (user id, secret)."""

    def make(credit_micros: int = 1_000_000) -> tuple[int, str]:
        user = user_create(email=f"caller{next(_ids)}@example.com")
        if credit_micros:
            wallet_credit(user=user, amount_micros=credit_micros,
                          idempotency_key=f"fund-{user.pk}", memo="test", kind="topup")
        return user.pk, api_key_create(user=user).secret

    return make


@pytest.fixture
def client_for(router: LiveRouter) -> Callable[[str], openai.OpenAI]:
    def make(secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=router.base_url, api_key=secret, max_retries=0,
                             timeout=20)

    return make
