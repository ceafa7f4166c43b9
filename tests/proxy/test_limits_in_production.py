"""Limits as production runs them: two router processes sharing Redis and PostgreSQL, and
a Redis that stops in the middle."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from accounts.models import ApiKey
from billing.models import Hold, LedgerEntry, UsageRecord
from proxy.ground import shared_state
from tests.live_router import wait_for_charges
from tests.router_processes import (
    env_for_test_database,
    free_port,
    router_processes,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def two_routers(mock_model, settings) -> Iterator[list[str]]:
    """Two uvicorn processes on the test database and the test Redis."""
    with router_processes(2, env_for_test_database(REDIS_URL=settings.REDIS_URL)) as routers:
        yield [router.base_url for router in routers]


def test_two_router_processes_together_let_through_exactly_the_rpm_limit(two_routers,
                                                                        make_key):
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=5)
    statuses = []
    for index in range(12):
        response = httpx.post(f"{two_routers[index % 2]}/chat/completions", json=BODY,
                              headers={"Authorization": f"Bearer {secret}"}, timeout=20)
        statuses.append(response.status_code)
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 7
    wait_for_charges()
    assert LedgerEntry.objects.filter(kind="charge").count() == 5


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen]]:
    """A Redis server of this test's own, so that the test can stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL)
    wait_for_port(port, process)
    yield f"redis://127.0.0.1:{port}/0", process
    if process.poll() is None:
        process.kill()
        process.wait(5)


def test_with_redis_stopped_mid_test_calls_still_succeed_and_are_charged_exactly(
    own_redis, mock_model, make_key, router, settings, caplog
):
    import redis

    url, server = own_redis
    settings.REDIS_URL = url
    shared_state.reset_for_tests()
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=100)

    def call() -> int:
        return httpx.post(f"{router.base_url}/chat/completions", json=BODY, timeout=20,
                          headers={"Authorization": f"Bearer {secret}"}).status_code

    assert [call() for _ in range(3)] == [200] * 3
    assert redis.Redis.from_url(url).keys("*"), "the limits were counted in this Redis"
    server.kill()
    server.wait(5)
    assert [call() for _ in range(3)] == [200] * 3
    router.drain()
    assert "counted per process" in caplog.text
    assert LedgerEntry.objects.filter(kind="charge").count() == 6
    charged = sum(-e.amount_micros for e in LedgerEntry.objects.filter(kind="charge"))
    assert charged == sum(r.cost_micros for r in UsageRecord.objects.all())
    assert not Hold.objects.filter(status="pending").exists()
    shared_state.reset_for_tests()


def test_two_router_processes_together_keep_a_keys_spend_cap_exactly(two_routers, make_key):
    from billing.models import KeyBudget
    from billing.services import key_budget_set
    from proxy.ground.tokens import estimate_request_prompt_tokens
    from proxy.money import allowance

    _, calibration = make_key()
    first = httpx.post(f"{two_routers[0]}/chat/completions", json=BODY, timeout=20,
                       headers={"Authorization": f"Bearer {calibration}"})
    cost = int(first.headers["x-router-cost-micros"])
    # 1 µ$ per token; the hold covers the cap plus the output meter's tolerance.
    hold = estimate_request_prompt_tokens(BODY) + allowance(BODY["max_tokens"])
    _, secret = make_key()
    key = ApiKey.objects.get(prefix=secret[:18])
    # Room for exactly five: after four settled requests a fifth hold still fits.
    key_budget_set(api_key=key, lifetime_limit_micros=4 * cost + hold,
                   monthly_limit_micros=None)
    statuses = [httpx.post(f"{two_routers[i % 2]}/chat/completions", json=BODY, timeout=20,
                           headers={"Authorization": f"Bearer {secret}"}).status_code
                for i in range(8)]
    assert statuses == [200] * 5 + [402] * 3
    wait_for_charges()
    budget = KeyBudget.objects.get(api_key=key)
    assert budget.spent_micros == 5 * cost <= budget.lifetime_limit_micros
