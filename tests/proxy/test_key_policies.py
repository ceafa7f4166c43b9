"""Rate limits and key policies on the request path (issue 5), through the live router."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from accounts.models import ApiKey, User
from billing.models import Hold, LedgerEntry
from proxy.ground.cache import clear_all_caches
from tests.concurrency import run_concurrently

MESSAGES = [{"role": "user", "content": "Limit me."}]


@pytest.fixture
def short_window(monkeypatch):
    monkeypatch.setattr("proxy.limits.WINDOW_SECONDS", 2.0)


def _policy(secret: str, **fields) -> ApiKey:
    key = ApiKey.objects.get(prefix=secret[:18])
    for name, value in fields.items():
        setattr(key, name, value)
    key.save()
    clear_all_caches()  # as the lookup TTL would a few seconds later
    return key


def _post(router, secret: str, **body) -> httpx.Response:
    return httpx.post(f"{router.base_url}/chat/completions", timeout=20,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "test-model", "messages": MESSAGES, "max_tokens": 10,
                            **body})


def test_rpm_5_refuses_the_6th_call_with_a_retry_after_that_works_when_honoured(
    openai_worker, make_key, client_for, router, short_window
):
    _, secret = make_key()
    _policy(secret, rpm=5)
    for _ in range(5):
        response = _post(router, secret)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "5"
    refused = _post(router, secret)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-request-id"].startswith("req_")
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError):
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                                   max_tokens=10)
    time.sleep(float(refused.headers["retry-after-ms"]) / 1000 + 0.05)
    assert _post(router, secret).status_code == 200
    router.drain()
    assert LedgerEntry.objects.filter(kind="charge").count() == 6
    assert not Hold.objects.filter(status="pending").exists()


def test_a_request_over_the_remaining_tokens_is_refused_and_settle_counts_the_actual(
    openai_worker, upstream, make_key, router, short_window
):
    _, secret = make_key()
    _policy(secret, tpm=400)
    first = _post(router, secret, max_tokens=100)
    assert first.status_code == 200
    actual = first.json()["usage"]["total_tokens"]
    assert _post(router, secret, max_tokens=350).status_code == 429
    router.drain()
    second = _post(router, secret, max_tokens=20)
    assert second.status_code == 200
    estimate = int(second.headers["x-ratelimit-limit-tokens"]) - int(
        second.headers["x-ratelimit-remaining-tokens"]) - actual
    # What is left counts the first request at its actual tokens, not at its estimate.
    assert 20 < estimate < 100
    assert len(upstream.bodies) == 2


def test_a_third_simultaneous_call_is_refused_at_concurrency_2(
    openai_worker, upstream, make_key, router
):
    _, secret = make_key()
    _policy(secret, max_concurrency=2)
    upstream.configure(first_byte_delay=1.0)
    results = run_concurrently(lambda: _post(router, secret).status_code,
                               [() for _ in range(3)], threads=3)
    router.drain()
    assert sorted(results) == [200, 200, 429]
    upstream.configure(first_byte_delay=0)
    assert _post(router, secret).status_code == 200  # the slots were freed


def test_a_user_limit_covers_all_of_the_users_keys(openai_worker, make_key, router,
                                                   short_window):
    from accounts.services import api_key_create

    user_id, first = make_key()
    User.objects.filter(pk=user_id).update(rpm=2)
    second = api_key_create(user=User.objects.get(pk=user_id)).secret
    assert _post(router, first).status_code == 200
    assert _post(router, second).status_code == 200
    assert _post(router, first).status_code == 429
    assert _post(router, second).status_code == 429


def test_a_model_outside_the_keys_allow_list_is_forbidden_and_costs_nothing(
    openai_worker, make_key, router
):
    _, secret = make_key()
    _policy(secret, allowed_models=["some-other-model"])
    refused = _post(router, secret)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert not Hold.objects.exists()
    _policy(secret, allowed_models=["test-model"])
    assert _post(router, secret).status_code == 200


def test_a_client_address_outside_the_keys_networks_is_forbidden(openai_worker, make_key,
                                                                 router):
    _, secret = make_key()
    _policy(secret, allowed_ips=["203.0.113.0/24"])
    refused = _post(router, secret)
    assert refused.status_code == 403
    assert "may not be used from 127.0.0.1" in refused.json()["error"]["message"]
    assert not Hold.objects.exists()
    _policy(secret, allowed_ips=["203.0.113.0/24", "127.0.0.0/8"])
    assert _post(router, secret).status_code == 200


def test_an_expired_key_is_refused_with_401(openai_worker, make_key, router):
    from datetime import timedelta

    from django.utils import timezone

    _, secret = make_key()
    _policy(secret, expires_at=timezone.now() - timedelta(seconds=1))
    assert _post(router, secret).status_code == 401


def test_a_keys_spend_cap_refuses_with_402_saying_it_is_the_keys_cap(
    openai_worker, make_key, client_for, router
):
    from billing.models import KeyBudget
    from billing.services import key_budget_set

    _, secret = make_key()
    key = ApiKey.objects.get(prefix=secret[:18])
    key_budget_set(api_key=key, lifetime_limit_micros=400, monthly_limit_micros=None)
    assert _post(router, secret, max_tokens=100).status_code == 200  # hold ~ 230 µ$
    router.drain()
    with pytest.raises(openai.APIStatusError) as capped:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES,
                                                   max_tokens=200)
    assert capped.value.status_code == 402
    assert capped.value.code == "insufficient_quota"
    assert "API key has reached its lifetime spend cap" in capped.value.message
    budget = KeyBudget.objects.get(api_key=key)
    assert budget.pending_micros == 0
    assert budget.spent_micros == -sum(e.amount_micros for e in
                                       LedgerEntry.objects.filter(kind="charge"))
