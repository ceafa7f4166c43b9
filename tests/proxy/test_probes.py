"""Health probes against real local servers: healthy, failing, slow, refusing; the service
that records them, the Celery task, and the Celery app with its beat schedule."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from django.conf import settings

from proxy.ground.cache import TTLCache
from proxy.models import Worker
from proxy.services import worker_create, workers_probe_all
from proxy.tasks import workers_probe
from proxy.upstream import probes
from proxy.upstream.probes import ProbeResult, probe_worker
from tests.proxy.upstream import UpstreamServer, openai_error

SECRET = "sk-upstream-PROBE-PLAINTEXT-0123456789"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db

# A cache of the kind the request path keeps, to see when the probe clears them.
_lookups: TTLCache[str, str] = TTLCache(ttl=lambda: 3600)


class ModelsServer(UpstreamServer):
    """The test upstream, with ``status``, ``error_body`` and ``first_byte_delay`` applied
    to ``GET /v1/models`` as well (UpstreamServer applies them to chat completions only)."""

    async def _models(self, request: web.Request) -> web.Response:
        behaviour = self.behaviour
        if behaviour.first_byte_delay:
            await asyncio.sleep(behaviour.first_byte_delay)
        if behaviour.status is None:
            return await super()._models(request)
        await self.record(request)
        return self._json(behaviour.error_body or openai_error(behaviour.status),
                          behaviour.status)


@pytest.fixture
def healthy() -> Iterator[ModelsServer]:
    with ModelsServer(require_api_key=SECRET) as server:
        yield server


@pytest.fixture
def failing() -> Iterator[ModelsServer]:
    with ModelsServer(status=500) as server:
        yield server


@pytest.fixture
def refused_url() -> str:
    # A port that was free a moment ago and has no listener now.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def add(name: str, base_url: str = "", *, kind: str = "openai", **kwargs) -> Worker:
    return worker_create(name=name, kind=kind, base_url=base_url, api_key=SECRET,
                         models=[("m", "")], **kwargs)


def health(name: str) -> tuple[bool, int | None, str]:
    worker = Worker.objects.get(name=name)
    return worker.healthy, worker.last_probe_latency_ms, worker.last_probe_error


def _stale() -> str:
    return "stale"


def prime_lookups() -> None:
    asyncio.run(_lookups.get_or_load("k", _stale))
    assert _lookups._data


# --- probing one worker ------------------------------------------------------------------

def test_a_healthy_openai_upstream_is_ok_and_gets_the_key_as_a_bearer_token(healthy):
    worker = add("up", healthy.base_url)

    result = probe_worker(worker)

    assert result.ok is True
    assert result.error == ""
    assert result.latency_ms is not None
    assert 0 <= result.latency_ms < 5000
    (request,) = healthy.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["Authorization"] == f"Bearer {SECRET}"


def test_an_anthropic_upstream_gets_x_api_key_and_the_api_version(healthy):
    healthy.configure(require_api_key=None)
    worker = add("claude", healthy.base_url, kind="anthropic")

    assert probe_worker(worker).ok is True
    (request,) = healthy.requests
    assert request.path == "/v1/models"
    assert request.headers["x-api-key"] == SECRET
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in request.headers


def test_a_worker_without_a_key_is_probed_without_credentials(healthy):
    healthy.configure(require_api_key=None)
    worker = worker_create(name="open", kind="openai", base_url=healthy.base_url,
                           models=[("m", "")])

    assert probe_worker(worker).ok is True
    assert "Authorization" not in healthy.requests[0].headers


def test_the_mock_worker_is_healthy_without_any_network():
    worker = worker_create(name="mock", kind="mock", models=[("mock-gpt", "")])

    assert probe_worker(worker) == ProbeResult(ok=True, latency_ms=0, error="")


def test_a_5xx_answer_is_a_failure_with_its_status_and_message(failing):
    result = probe_worker(add("bad", failing.base_url))

    assert result.ok is False
    assert result.latency_ms is not None
    assert result.error.startswith("HTTP 500: The server had an error")
    assert "\n" not in result.error


def test_a_refused_connection_is_a_failure_without_latency(refused_url):
    result = probe_worker(add("gone", refused_url))

    assert result.ok is False
    assert result.latency_ms is None
    assert "cannot connect to 127.0.0.1:" in result.error
    assert "Connection refused" in result.error


def test_a_slow_upstream_times_out(monkeypatch, healthy):
    monkeypatch.setattr(probes, "PROBE_TOTAL_TIMEOUT_S", 0.2)
    healthy.configure(first_byte_delay=2.0)

    result = probe_worker(add("slow", healthy.base_url))

    assert result.ok is False
    assert result.latency_ms is None
    assert result.error == "timed out waiting (limit 0.2 s)"


def test_an_upstream_that_quotes_the_key_back_does_not_leak_it(healthy):
    healthy.configure(status=401, error_body={"error": {
        "message": f"Incorrect API key provided:\n{SECRET}. Get one at https://example.com",
        "type": "invalid_request_error"}})

    result = probe_worker(add("leaky", healthy.base_url))

    assert result.ok is False
    assert SECRET not in result.error
    assert result.error == ("HTTP 401: Incorrect API key provided: [redacted]. "
                            "Get one at https://example.com")


def test_a_long_error_body_is_cut_to_one_short_line(healthy):
    healthy.configure(status=503, error_body={"error": {"message": "overloaded " * 100}})

    result = probe_worker(add("busy", healthy.base_url))

    assert len(result.error) <= 200
    assert result.error.startswith("HTTP 503: overloaded overloaded")


def test_many_workers_are_probed_concurrently_within_the_bound(monkeypatch, healthy):
    healthy.configure(first_byte_delay=0.3, require_api_key=None)
    monkeypatch.setattr(probes, "PROBE_CONCURRENCY", 4)
    workers = [add(f"w{i}", healthy.base_url) for i in range(8)]

    started = time.perf_counter()
    results = probes.probe_workers(workers)
    elapsed = time.perf_counter() - started

    assert [r.ok for r in results] == [True] * 8
    assert all(r.latency_ms is not None and r.latency_ms >= 280 for r in results)
    # Eight probes of 0.3 s, four at a time: two rounds, not one (unbounded) or eight.
    assert 0.58 <= elapsed < 1.5
    assert len(healthy.requests) == 8


# --- the service -------------------------------------------------------------------------

def test_probing_all_marks_each_worker_and_skips_disabled_ones(healthy, failing, refused_url):
    add("up", healthy.base_url)
    add("bad", failing.base_url)
    add("gone", refused_url)
    worker_create(name="mock", kind="mock", models=[("m", "")])
    add("off", refused_url, enabled=False)

    outcomes = workers_probe_all()

    assert {worker.name: result.ok for worker, result in outcomes} == {
        "up": True, "bad": False, "gone": False, "mock": True}
    assert health("up")[0] is True
    assert health("up")[1] is not None
    assert health("up")[2] == ""
    assert health("mock") == (True, 0, "")
    assert health("bad")[0] is False
    assert health("bad")[1] is not None
    assert health("bad")[2].startswith("HTTP 500")
    assert health("gone")[:2] == (False, None)
    assert "Connection refused" in health("gone")[2]
    for worker in Worker.objects.filter(enabled=True):
        assert worker.last_probe_at is not None
        assert SECRET not in worker.last_probe_error
        if worker.api_key_encrypted:
            assert worker.api_key_encrypted not in worker.last_probe_error
    off = Worker.objects.get(name="off")
    assert (off.healthy, off.last_probe_at) == (True, None)


def test_a_recovered_upstream_is_healthy_again_and_its_error_cleared(failing):
    add("flaky", failing.base_url)
    workers_probe_all()
    assert health("flaky")[0] is False
    first_probe_at = Worker.objects.get().last_probe_at

    failing.configure(status=None)
    workers_probe_all()

    assert health("flaky")[0] is True
    assert health("flaky")[2] == ""
    assert Worker.objects.get().last_probe_at > first_probe_at


def test_probing_only_named_workers(healthy, refused_url):
    add("up", healthy.base_url)
    add("gone", refused_url)

    outcomes = workers_probe_all(names=["gone"])

    assert [worker.name for worker, _ in outcomes] == ["gone"]
    assert Worker.objects.get(name="up").last_probe_at is None


def test_a_probe_does_not_touch_what_staff_set(healthy):
    worker = add("up", healthy.base_url, priority=3)
    updated_at = Worker.objects.get().updated_at

    workers_probe_all()

    after = Worker.objects.get()
    assert (after.priority, after.updated_at, after.get_api_key()) == (3, updated_at, SECRET)
    assert after.last_probe_at is not None
    assert worker.pk == after.pk


def test_the_lookup_caches_are_cleared_only_when_health_flips(failing):
    add("flaky", failing.base_url)

    prime_lookups()
    workers_probe_all()  # healthy (the default) -> unhealthy
    assert not _lookups._data

    prime_lookups()
    workers_probe_all()  # still unhealthy: nothing for the request path to forget
    assert _lookups._data

    failing.configure(status=None)
    workers_probe_all()  # unhealthy -> healthy
    assert not _lookups._data


def test_with_no_enabled_workers_nothing_is_probed():
    worker_create(name="off", kind="mock", models=[("m", "")], enabled=False)

    assert workers_probe_all() == []


# --- the Celery task and app -------------------------------------------------------------

def test_the_task_run_eagerly_probes_and_returns_a_summary(healthy, failing, refused_url):
    add("up", healthy.base_url)
    add("bad", failing.base_url)
    add("gone", refused_url)

    result = workers_probe.apply()

    assert result.successful()
    assert result.get() == {"probed": 3, "healthy": 1, "unhealthy": ["bad", "gone"]}
    assert dict(Worker.objects.values_list("name", "healthy")) == {
        "up": True, "bad": False, "gone": False}


def test_the_celery_app_schedules_the_probe_and_knows_the_task():
    from router_admin import celery_app

    celery_app.loader.import_default_modules()

    assert "proxy.tasks.workers_probe" in celery_app.tasks
    entry = celery_app.conf.beat_schedule["workers-probe"]
    assert entry["task"] == "proxy.tasks.workers_probe"
    assert entry["schedule"] == settings.ROUTER_PROBE_INTERVAL_SECONDS == 30
    assert celery_app.conf.task_always_eager is False
    assert celery_app.conf.result_backend is None
    # The suite runs with Redis, which then is the broker too.
    assert celery_app.conf.broker_url == settings.REDIS_URL != ""


def _celery_process(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ROUTER_ENCRYPTION_KEYS",
                          "DEBUG", "ROUTER_PROBE_INTERVAL_SECONDS"}}
    code = (
        "import django; django.setup()\n"
        "from router_admin import celery_app as app\n"
        "app.loader.import_default_modules()\n"
        "entry = app.conf.beat_schedule['workers-probe']\n"
        "print(app.conf.broker_url, entry['task'], entry['schedule'],\n"
        "      'proxy.tasks.workers_probe' in app.tasks)\n"
    )
    return subprocess.run([sys.executable, "-c", code],
                          env={**clean, "DJANGO_SETTINGS_MODULE": "router_admin.settings", **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_the_embedded_default_loads_celery_with_a_broker_that_needs_no_server():
    result = _celery_process()

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["filesystem://localhost/", "proxy.tasks.workers_probe",
                                     "30.0", "True"]


def test_the_probe_interval_comes_from_the_environment():
    result = _celery_process(ROUTER_PROBE_INTERVAL_SECONDS="7")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[2] == "7.0"


def test_a_probe_interval_below_one_second_stops_the_start():
    result = _celery_process(ROUTER_PROBE_INTERVAL_SECONDS="0")

    assert result.returncode != 0
    assert "ROUTER_PROBE_INTERVAL_SECONDS=0 is below the minimum of 1" in result.stderr
