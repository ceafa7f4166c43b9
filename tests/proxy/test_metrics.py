"""/metrics counts what happened, exactly, and only staff or allowed networks read it."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.staff import staff_sign_in

MESSAGES = [{"role": "user", "content": "count me"}]


@pytest.fixture(autouse=True)
def _local_host(settings):
    # /metrics is a site page: Django checks the Host header against ALLOWED_HOSTS.
    settings.ALLOWED_HOSTS = ["127.0.0.1", "testserver"]


def _scrape(router) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{router.url}/metrics")
    assert response.status_code == 200
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def _get(values, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_known_number_of_requests_and_tokens_exactly(
    openai_worker, make_key, router
):
    _, secret = make_key()
    before = _scrape(router)
    usage = {"prompt": 0, "completion": 0, "cost": 0}
    for _ in range(3):
        response = httpx.post(f"{router.base_url}/chat/completions", timeout=20,
                              headers={"Authorization": f"Bearer {secret}"},
                              json={"model": "test-model", "messages": MESSAGES,
                                    "max_tokens": 7})
        body = response.json()
        usage["prompt"] += body["usage"]["prompt_tokens"]
        usage["completion"] += body["usage"]["completion_tokens"]
        usage["cost"] += int(response.headers["x-router-cost-micros"])
    httpx.post(f"{router.base_url}/chat/completions", json={"model": "test-model"},
               headers={"Authorization": f"Bearer {secret}"})
    router.drain()
    after = _scrape(router)

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    worker = openai_worker.name
    assert delta("router_requests_total", model="test-model", status="ok",
                 worker=worker) == 3
    assert delta("router_requests_total", model="", status="400", worker="") == 1
    assert delta("router_tokens_total", model="test-model", kind="prompt") == usage["prompt"]
    assert delta("router_tokens_total", model="test-model",
                 kind="completion") == usage["completion"]
    assert delta("router_charged_micros_total", model="test-model") == usage["cost"]
    assert delta("router_request_latency_seconds_count", model="test-model") == 3
    assert _get(after, "router_holds_pending") == 0
    assert _get(after, "router_circuit_open", worker=worker) == 0


def test_metrics_are_refused_to_an_anonymous_caller_outside_the_allowed_networks(
    router, settings, client, make_user
):
    settings.ROUTER_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert httpx.get(f"{router.url}/metrics").status_code == 403
    staff = make_user(is_staff=True)
    staff_sign_in(client, staff)
    assert client.get("/metrics").status_code == 200
