"""The worker lists (``router worker list``, the admin's) show each worker's circuit beside
its probe health: a worker whose circuit the routers opened still passes its probe."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import redis
from django.urls import reverse

from proxy.ground import shared_state
from proxy.models import Worker
from proxy.upstream.breaker import breaker_failure, reset_local_breakers
from tests.router_processes import ROOT, env_for_test_database

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _breakers(settings):
    settings.ROUTER_BREAKER_FAILURES = 3
    settings.ROUTER_BREAKER_COOLDOWN_SECONDS = 60
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    shared_state.reset_for_tests()
    reset_local_breakers()
    yield
    shared_state.reset_for_tests()
    reset_local_breakers()


def _worker(name: str) -> Worker:
    return Worker.objects.create(name=name, kind="mock", healthy=True)


def _fail(worker: Worker, times: int) -> None:
    """Failures reported by a router instance (its own loop and Redis client), which then
    goes away: what is left is what Redis holds."""
    async def fail() -> None:
        try:
            for _ in range(times):
                await breaker_failure(worker.pk)
        finally:
            await shared_state.close_redis_clients()

    asyncio.run(fail())
    shared_state.reset_for_tests()
    reset_local_breakers()


def _cli_worker_list() -> dict[str, str]:
    """``router worker list`` in a process of its own, as an operator runs it."""
    done = subprocess.run([sys.executable, "manage.py", "router", "worker", "list"],
                          cwd=ROOT, env=env_for_test_database(), capture_output=True,
                          text=True, timeout=60, check=True)
    return {line.split(":", 1)[0]: line for line in done.stdout.splitlines()}


def test_the_cli_says_a_workers_circuit_is_open_while_its_probe_says_healthy():
    broken, fine = _worker("broken"), _worker("fine")
    _fail(broken, 3)
    _fail(fine, 2)  # failures, but fewer than open a circuit

    lines = _cli_worker_list()

    assert "healthy, circuit open" in lines["broken"]
    assert "unhealthy" not in lines["broken"]
    assert "healthy, circuit closed" in lines["fine"]


def test_the_admins_worker_list_shows_the_circuit_beside_health(admin_client):
    broken, fine = _worker("broken"), _worker("fine")
    _fail(broken, 3)

    page = admin_client.get(reverse("admin:proxy_worker_changelist")).content.decode()

    assert page.count('class="router-badge circuit-open" title="circuit open">open<') == 1
    assert page.count('class="router-badge circuit-closed" title="circuit closed">closed<') == 1
    assert page.count('class="router-badge healthy">healthy<') == 2
    assert fine.name in page
    assert broken.name in page
