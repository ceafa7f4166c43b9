"""The /v1 handler refuses a Host outside ALLOWED_HOSTS, as the site does, in OpenAI's
format; health checks answer whatever the Host."""

from __future__ import annotations

import httpx

from billing.models import Hold
from tests.openai_schema import validate

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def _post(router, secret: str, host: str) -> httpx.Response:
    return httpx.post(f"{router.base_url}/chat/completions", json=BODY, timeout=20,
                      headers={"Authorization": f"Bearer {secret}", "Host": host})


def test_a_host_outside_allowed_hosts_gets_an_openai_400_and_reserves_nothing(
    router, make_key, openai_worker
):
    _, secret = make_key()
    response = _post(router, secret, "evil.example")
    assert response.status_code == 400
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "invalid_host"
    assert response.headers["x-request-id"].startswith("req_")
    assert not Hold.objects.exists()


def test_a_host_matching_a_domain_pattern_passes_with_any_port(router, make_key,
                                                               openai_worker, settings):
    settings.ALLOWED_HOSTS = [".example.com"]
    _, secret = make_key()
    assert _post(router, secret, "api.example.com:8443").status_code == 200
    assert _post(router, secret, "example.com").status_code == 200
    assert _post(router, secret, "example.com.evil.test").status_code == 400


def test_a_host_refused_after_allowed_hosts_changes_even_if_it_passed_before(
    router, make_key, openai_worker, settings
):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    _, secret = make_key()
    assert _post(router, secret, "api.example.com").status_code == 200
    settings.ALLOWED_HOSTS = ["other.example.com"]
    assert _post(router, secret, "api.example.com").status_code == 400


def test_health_checks_answer_whatever_the_host(router):
    # A load balancer's probe names the instance by its address.
    response = httpx.get(f"{router.url}/healthz", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code == 200
