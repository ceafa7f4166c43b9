"""/healthz and /readyz, as a load balancer sees them."""

from __future__ import annotations

import socket

import httpx
from django.conf import settings

from proxy.models import Worker


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(router) -> httpx.Response:
    return httpx.get(f"{router.url}/readyz", timeout=10)


def test_healthz_answers_while_the_process_serves(router):
    response = httpx.get(f"{router.url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_needs_an_enabled_worker(router):
    assert _ready(router).json()["checks"]["workers"].startswith("failing")
    Worker.objects.create(name="mock", kind="mock")
    response = _ready(router)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {
        "database": "ok", "redis": "ok", "workers": "ok"}}


def test_readyz_turns_unhealthy_when_postgresql_is_unreachable_and_healthy_after(
    router, monkeypatch
):
    Worker.objects.create(name="mock", kind="mock")
    monkeypatch.setitem(settings.DATABASES["default"], "PORT", str(_closed_port()))
    response = _ready(router)
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("failing")
    monkeypatch.undo()
    assert _ready(router).status_code == 200


def test_readyz_turns_unhealthy_when_redis_is_unreachable_and_healthy_after(
    router, settings
):
    Worker.objects.create(name="mock", kind="mock")
    real = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    response = _ready(router)
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("failing")
    settings.REDIS_URL = real
    assert _ready(router).status_code == 200
