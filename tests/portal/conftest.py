from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_create
from billing.models import ModelPrice, UsageRecord
from billing.services import wallet_credit
from billing.services.refusals import RefusalCount, refusals_record

PASSWORD = "correct horse battery staple 42"
_request_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Sign-in failures are counted in the cache; one test's must not block the next.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def member(make_user) -> User:
    """A portal user with a password and $10 of credit."""
    user = make_user(email="member@example.com", password=PASSWORD)
    wallet_credit(user=user, amount_micros=10_000_000, idempotency_key=f"fund-{user.pk}",
                  memo="welcome credit", kind="topup")
    return user


@pytest.fixture
def other(make_user) -> User:
    """Someone else, with a key and a request of their own."""
    return make_user(email="other@example.com", password=PASSWORD)


@pytest.fixture
def member_client(client: Client, member: User) -> Client:
    client.force_login(member)
    return client


@pytest.fixture
def make_key() -> Callable[..., ApiKey]:
    def make(user: User, name: str = "", **policies) -> ApiKey:
        return api_key_create(user=user, name=name, **policies).api_key

    return make


@pytest.fixture
def make_usage(price: ModelPrice) -> Callable[..., UsageRecord]:
    def make(user: User, *, api_key: ApiKey | None = None, cost_micros: int = 1_000,
             model: str = "test-model", status: str = UsageRecord.Status.OK,
             at: datetime | None = None, prompt_tokens: int = 100,
             completion_tokens: int = 50, endpoint: str = UsageRecord.Endpoint.CHAT,
             cache_write_tokens: int = 0) -> UsageRecord:
        record = UsageRecord.objects.create(
            request_id=f"portal-req-{next(_request_ids)}", user=user, api_key=api_key,
            model=model, price=price, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_micros=cost_micros, status=status,
            latency_ms=120, endpoint=endpoint, cache_write_tokens=cache_write_tokens)
        if at is not None:  # created_at is stamped on insert; move it where the test needs
            UsageRecord.objects.filter(pk=record.pk).update(created_at=at)
            record.created_at = at
        return record

    return make



def money_html(micros: int) -> str:
    """What the portal's ``usd`` filter renders: six decimals, the exact micro-USD on hover."""
    return (f'<span class="money" title="{micros:,} micro-USD">'
            f'{"-" if micros < 0 else ""}${abs(micros) / 1_000_000:.6f}</span>')


@pytest.fixture
def refuse(make_key) -> Callable[..., ApiKey]:
    """Count refused requests of ``user`` as the request path does (a group per key and
    minute); returns the key."""

    def make(user, *, key=None, count=1, status=402, reason="balance", model="test-model",
             endpoint="chat", at=None, message="You exceeded your current quota."):
        key = key or make_key(user, name="ci")
        minute = (at or timezone.now()).replace(second=0, microsecond=0)
        refusals_record(counts=[RefusalCount(
            user_id=user.pk, api_key_id=key.pk, minute=minute, status=status, reason=reason,
            model=model, endpoint=endpoint, count=count, message=message,
            last_request_id="req_last")])
        return key

    return make
