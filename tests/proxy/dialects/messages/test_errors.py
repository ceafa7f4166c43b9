"""Every error on /v1/messages is Anthropic's shape, so the SDK raises its own class."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from accounts.services import api_key_create, user_create
from billing.services import wallet_credit
from tests.proxy.anthropic.helpers import assert_nothing_charged

ASK = {"model": "claude-test", "max_tokens": 50,
       "messages": [{"role": "user", "content": "Hi"}]}


def _error_type(error: anthropic.APIStatusError) -> str:
    assert error.body["type"] == "error"
    return error.body["error"]["type"]


def test_a_body_without_max_tokens_is_a_bad_request(claude_price, make_key, sdk_for):
    _, secret = make_key()
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk_for(secret).messages.create(model="claude-test", max_tokens=None,  # type: ignore
                                        messages=[{"role": "user", "content": "Hi"}])
    assert _error_type(caught.value) == "invalid_request_error"
    assert "max_tokens" in caught.value.body["error"]["message"]


def test_a_wrong_key_is_an_authentication_error_that_does_not_echo_it(
    claude_price, router, sdk_for
):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk_for("sk-wrong-key-1234567890").messages.create(**ASK)
    assert _error_type(caught.value) == "authentication_error"
    assert "sk-wrong" not in caught.value.body["error"]["message"]
    missing = httpx.post(f"{router.url}/v1/messages", json=ASK)
    assert (missing.status_code, missing.json()["error"]["type"]) == (
        401, "authentication_error")


def test_the_key_is_also_taken_as_a_bearer_token(anthropic_worker, make_key, router):
    _, secret = make_key()
    answer = httpx.post(f"{router.url}/v1/messages", json=ASK, timeout=20,
                        headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["type"] == "message"
    router.drain()


def test_an_empty_wallet_is_a_billing_error(anthropic_worker, make_key, sdk_for):
    _, secret = make_key(credit_micros=0)
    with pytest.raises(anthropic.PaymentRequiredError) as caught:
        sdk_for(secret).messages.create(**ASK)
    assert caught.value.status_code == 402
    assert _error_type(caught.value) == "billing_error"


def _restricted_key(**policy) -> str:
    user = user_create(email=f"restricted-{len(policy)}@example.com")
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key=f"fund-r{user.pk}",
                  memo="test", kind="topup")
    return api_key_create(user=user, **policy).secret


def test_a_model_the_key_may_not_use_is_a_permission_error(anthropic_worker, sdk_for):
    secret = _restricted_key(allowed_models=["another-model"])
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        sdk_for(secret).messages.create(**ASK)
    assert _error_type(caught.value) == "permission_error"


def test_an_unknown_model_is_not_found(claude_price, make_key, sdk_for):
    _, secret = make_key()
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk_for(secret).messages.create(**{**ASK, "model": "no-such-model"})
    assert _error_type(caught.value) == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        sdk_for(secret).messages.count_tokens(model="no-such-model",
                                              messages=ASK["messages"])
    # A route under /v1/messages/ that does not exist is a 404 in Anthropic's shape too.
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk_for(secret).post("/v1/messages/batches/nope", cast_to=httpx.Response, body={})
    assert _error_type(caught.value) == "not_found_error"


def test_the_rpm_limit_is_a_rate_limit_error_with_its_headers(anthropic_worker, sdk_for,
                                                              router):
    client = sdk_for(_restricted_key(rpm=1))
    client.messages.create(**ASK)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**ASK)
    assert _error_type(caught.value) == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert "x-ratelimit-limit-requests" in caught.value.response.headers
    router.drain()


def test_a_bug_of_ours_is_an_api_error_in_anthropics_shape(
    claude_price, make_key, sdk_for, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("proxy.dialects.messages.views.parse_messages_request", broken)
    _, secret = make_key()
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk_for(secret).messages.create(**ASK)
    assert caught.value.status_code == 500
    assert _error_type(caught.value) == "api_error"
    assert "a bug" not in caught.value.body["error"]["message"]


def test_no_worker_for_the_model_is_overloaded(claude_price, make_key, sdk_for):
    user_id, secret = make_key()
    with pytest.raises(anthropic.OverloadedError) as caught:
        sdk_for(secret).messages.create(**ASK)
    assert caught.value.status_code == 529
    assert _error_type(caught.value) == "overloaded_error"
    assert_nothing_charged(user_id)


def test_a_body_over_the_limit_is_request_too_large(claude_price, router, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    answer = httpx.post(f"{router.url}/v1/messages", headers={"x-api-key": "whatever"},
                        json={**ASK, "messages": [{"role": "user", "content": "x" * 2000}]})
    assert answer.status_code == 413
    assert answer.json() == {"type": "error", "error": {
        "type": "request_too_large", "message": answer.json()["error"]["message"]}}


def test_an_upstream_that_fails_before_any_output_charges_nothing(
    anthropic_worker, anthropic_upstream, make_key, sdk_for, router
):
    anthropic_upstream.configure(status=529)
    user_id, secret = make_key()
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk_for(secret).messages.create(**ASK)
    assert _error_type(caught.value) == "api_error"
    router.drain()
    assert_nothing_charged(user_id)


def test_an_upstream_that_fails_mid_stream_ends_it_with_an_error_event(
    anthropic_worker, anthropic_upstream, make_key, router
):
    anthropic_upstream.configure(error_after_events=4)
    _, secret = make_key()
    with httpx.stream("POST", f"{router.url}/v1/messages", json={**ASK, "stream": True},
                      headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
                      timeout=20) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[0] == "event: message_start"
    assert lines[-2] == "event: error"
    assert '"type":"api_error"' in lines[-1]
    router.drain()
