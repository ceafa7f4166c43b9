"""Every /v1 path answers in OpenAI's format, whatever goes wrong."""

from __future__ import annotations

import logging

import httpx
import pytest

from billing.models import Hold
from tests.openai_schema import validate


@pytest.fixture
def key(make_key) -> str:
    return make_key()[1]


def _post(router, key: str, body: bytes | dict, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **headers}
    if isinstance(body, dict):
        return httpx.post(f"{router.base_url}/chat/completions", json=body, headers=headers)
    return httpx.post(f"{router.base_url}/chat/completions", content=body, headers=headers)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()
    validate(body, "ErrorResponse")
    return body["error"]


def test_an_unknown_v1_route_is_a_json_404(router):
    error = _error(httpx.get(f"{router.base_url}/engines/davinci"), 404)
    assert "GET /v1/engines/davinci" in error["message"]


def test_v1_itself_is_a_json_404(router):
    error = _error(httpx.get(f"{router.url}/v1"), 404)
    assert "GET /v1" in error["message"]


def test_a_wrong_method_is_a_json_405_with_allow(router, key):
    response = httpx.get(f"{router.base_url}/chat/completions",
                         headers={"Authorization": f"Bearer {key}"})
    _error(response, 405)
    assert response.headers["allow"] == "POST"


def test_a_body_over_the_limit_is_a_json_413(router, key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    error = _error(_post(router, key, b"{" + b" " * 4096 + b"}"), 413)
    assert error["code"] == "request_too_large"


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer sk-br-unknown"])
def test_missing_or_bad_keys_are_a_json_401(router, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{router.base_url}/chat/completions", headers=headers,
                          json={"model": "test-model", "messages": []})
    assert _error(response, 401)["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working_within_the_lookup_ttl(router, make_key, settings,
                                                            openai_worker):
    from accounts.models import ApiKey
    from accounts.services import api_key_revoke

    settings.ROUTER_LOOKUP_TTL_SECONDS = 0
    _, secret = make_key()
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    assert _post(router, secret, body).status_code == 200
    api_key_revoke(prefix=ApiKey.objects.get().prefix)
    assert _error(_post(router, secret, body), 401)["code"] == "invalid_api_key"


def test_our_own_bug_is_a_json_500_with_the_request_id_and_no_traceback(
    router, key, monkeypatch, caplog
):
    async def broken(**kwargs):
        raise RuntimeError("a bug with a secret detail")

    monkeypatch.setattr("proxy.relay.completion.chat_completion", broken)
    with caplog.at_level(logging.ERROR, logger="proxy.requests"):
        response = _post(router, key, {"model": "m", "messages": [
            {"role": "user", "content": "x"}]})
    error = _error(response, 500)
    assert error["type"] == "server_error"
    assert response.headers["x-request-id"] in error["message"]
    assert "secret detail" not in response.text
    assert "Traceback" not in response.text
    assert any(response.headers["x-request-id"] in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"not json", None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "test-model"}, "messages"),
        ({"model": "test-model", "messages": []}, "messages"),
        ({"model": "test-model", "messages": [{"role": "wizard", "content": "x"}]},
         "messages[0].role"),
        ({"model": "test-model", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content"),
        ({"model": "test-model", "messages": [{"role": "user", "content": "x"}],
          "temperature": 2.5}, "temperature"),
        ({"model": "test-model", "messages": [{"role": "user", "content": "x"}],
          "max_tokens": 0}, "max_tokens"),
        ({"model": "test-model", "messages": [{"role": "user", "content": "x"}],
          "stream": "yes"}, "stream"),
        ({"model": "test-model", "messages": [{"role": "user", "content": "x"}],
          "max_tokens": 501}, "max_tokens"),
    ],
)
def test_bad_requests_are_a_400_naming_the_param_and_reserve_nothing(
    router, key, openai_worker, body, param
):
    error = _error(_post(router, key, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert not Hold.objects.exists()


def test_a_priced_model_without_workers_is_a_503(router, key, model_price):
    error = _error(_post(router, key, {"model": "test-model", "messages": [
        {"role": "user", "content": "x"}]}), 503)
    assert error["code"] == "no_available_workers"
    assert not Hold.objects.exists()


def test_models_lists_only_priced_models_that_a_worker_serves(router, key, openai_worker):
    from billing.services import price_set

    price_set(model="priced-but-unserved", input_usd_per_mtok="1", output_usd_per_mtok="1")
    headers = {"Authorization": f"Bearer {key}"}
    listing = httpx.get(f"{router.base_url}/models", headers=headers)
    assert listing.status_code == 200
    validate(listing.json(), "ListModelsResponse")
    assert [m["id"] for m in listing.json()["data"]] == ["test-model"]
    one = httpx.get(f"{router.base_url}/models/test-model", headers=headers)
    validate(one.json(), "Model")
    assert one.json()["id"] == "test-model"
    _error(httpx.get(f"{router.base_url}/models/priced-but-unserved", headers=headers), 404)
    _error(httpx.get(f"{router.base_url}/models"), 401)


def test_a_database_that_cannot_be_reached_is_a_json_503_with_retry_after(
    router, key, monkeypatch
):
    from django.db import OperationalError

    def unreachable(**kwargs):
        raise OperationalError('connection to server at "db" failed: Connection refused')

    monkeypatch.setattr("proxy.selectors.api_key_authenticate", unreachable)
    response = _post(router, key, {"model": "test-model", "messages": [
        {"role": "user", "content": "x"}]})
    error = _error(response, 503)
    assert (error["type"], error["code"]) == ("service_unavailable", "service_unavailable")
    assert response.headers["retry-after"] == "1"
    assert "Connection refused" not in response.text
    assert not Hold.objects.exists()
