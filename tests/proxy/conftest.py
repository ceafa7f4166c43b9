from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import openai
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings

from accounts.services import api_key_create, user_create
from billing.models import ModelPrice
from billing.services import price_set, wallet_credit
from proxy.breaker import reset_local_breakers
from proxy.cache import clear_all_caches
from proxy.capacity import reset_local_slots
from proxy.limits import reset_local_limits
from proxy.models import Worker, WorkerModel
from tests.live_router import LiveRouter
from tests.proxy.upstream import UpstreamServer, upstream  # noqa: F401 - a fixture

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def live_router(django_db_setup, django_db_blocker) -> Iterator[LiveRouter]:
    # Clients of the live router name it by its address; the API checks the Host header.
    hosts = override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "127.0.0.1"])
    hosts.enable()
    router = LiveRouter().start()
    yield router
    router.stop()
    hosts.disable()
    # The router's executor threads keep their connections; end them so the test database
    # can be dropped.
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture(autouse=True)
def _fresh_lookups() -> Iterator[None]:
    # Cached keys, prices and workers, and breaker and capacity state, must not leak from
    # one test's database to the next.
    _forget_shared_state()
    yield
    _forget_shared_state()


def _forget_shared_state() -> None:
    clear_all_caches()
    reset_local_breakers()
    reset_local_slots()
    reset_local_limits()


def _flush_redis() -> None:
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture
def model_price(transactional_db) -> ModelPrice:
    # 1 and 2 micro-USD per input and output token; cached input at 0.5.
    return price_set(model="test-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
                     cached_input_usd_per_mtok="0.5", max_output_tokens=500)


@pytest.fixture
def mock_model(transactional_db) -> None:
    """``mock-gpt`` at 1 micro-USD per token, served by the offline ``mock`` worker."""
    price_set(model="mock-gpt", input_usd_per_mtok="1", output_usd_per_mtok="1")
    WorkerModel.objects.create(worker=Worker.objects.create(name="mock", kind="mock"),
                               model="mock-gpt")
    clear_all_caches()


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
def router(live_router: LiveRouter, transactional_db) -> Iterator[LiveRouter]:
    """The live router, drained after the test so no late settlement races the teardown."""
    _flush_redis()  # breaker and slot state of earlier tests' workers
    yield live_router
    live_router.drain()


@pytest.fixture
def client_for(router: LiveRouter) -> Callable[[str], openai.OpenAI]:
    def make(secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=router.base_url, api_key=secret, max_retries=0,
                             timeout=20)

    return make
