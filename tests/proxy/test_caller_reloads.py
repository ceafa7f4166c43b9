"""The request path's key lookups reloaded many at once: the same callers, in a fixed number
of queries whatever the number of keys (the lookup keeper reloads every key in use about
once per ``ROUTER_LOOKUP_TTL_SECONDS``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.keys import key_prefix_of
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke, user_create
from billing.models import ModelPrice
from organizations.services import organization_create
from proxy.selectors import _load_caller, _load_callers, _load_prices

pytestmark = pytest.mark.django_db


def _keys(count: int) -> list[str]:
    secrets = []
    for i in range(count):
        user = user_create(email=f"reload{i}@example.com")
        secrets.append(api_key_create(user=user, rpm=10 + i).secret)
    return secrets


def test_many_callers_load_in_four_queries_and_equal_one_by_one(django_assert_num_queries):
    secrets = _keys(12)
    owner = user_create(email="owner@example.com")
    organization = organization_create(name="Acme", owner=owner)
    secrets.append(api_key_create(user=owner, organization_id=organization.pk).secret)
    asked = [*secrets, "sk-br-not-a-real-key-at-all-000000000000", "garbage", secrets[0]]
    one_by_one = [_load_caller(raw) for raw in asked]
    ApiKey.objects.update(last_used_at=None)  # the batch touches them again
    # keys, their wallets (personal, organization) and the touch
    with django_assert_num_queries(4):
        batched = _load_callers(asked)
    assert batched == one_by_one
    assert batched[-3] is None
    assert batched[-2] is None
    assert batched[12].organization_id == organization.pk
    assert batched[12].wallet_id != batched[0].wallet_id
    assert ApiKey.objects.filter(last_used_at__isnull=True).count() == 0


def test_a_revoked_expired_or_changed_key_is_seen_by_the_batch():
    secrets = _keys(3)
    first, second, third = (ApiKey.objects.get(prefix=key_prefix_of(s)) for s in secrets)
    api_key_revoke(prefix=first.prefix)
    ApiKey.objects.filter(pk=second.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    ApiKey.objects.filter(pk=third.pk).update(rpm=999)
    found = _load_callers(secrets)
    assert found[0] is None
    assert found[1] is None
    assert found[2] is not None
    assert found[2].key_limits.rpm == 999


def test_prices_load_in_one_query_each_model_its_price_in_force(django_assert_num_queries):
    now = timezone.now()

    def price(model: str, usd: str, effective_from) -> None:
        ModelPrice.objects.create(model=model, input_usd_per_mtok=usd, output_usd_per_mtok=usd,
                                  effective_from=effective_from)

    price("m-a", "1", now - timedelta(days=1))
    price("m-b", "2", now - timedelta(days=1))
    price("m-a", "5", now - timedelta(hours=1))
    price("m-b", "9", now + timedelta(days=1))  # not yet in force
    with django_assert_num_queries(1):
        prices = _load_prices(["m-a", "m-b", "m-none"])
    assert [p and int(p.input_usd_per_mtok) for p in prices] == [5, 2, None]
