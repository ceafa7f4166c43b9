from __future__ import annotations

import pytest

from accounts.models import ApiKey
from billing.errors import InvalidAmount
from billing.models import KeyBudget
from billing.selectors import SpendCaps, key_spend_caps
from billing.services.key_settings import api_key_configure, api_key_create_with_caps

POLICIES = {"name": "ci", "expires_at": None, "rpm": 5, "tpm": None, "max_concurrency": None,
            "allowed_models": [], "allowed_ips": []}


def test_a_key_is_created_with_its_caps_and_without_a_budget_row_when_it_has_none(user):
    capped = api_key_create_with_caps(user=user, caps=SpendCaps(2_000_000, 500_000),
                                      **POLICIES).api_key
    uncapped = api_key_create_with_caps(user=user, caps=SpendCaps(), **POLICIES).api_key

    assert key_spend_caps(api_key=ApiKey.objects.get(pk=capped.pk)) == SpendCaps(2_000_000,
                                                                                 500_000)
    assert not KeyBudget.objects.filter(api_key=uncapped).exists()
    assert key_spend_caps(api_key=uncapped) == SpendCaps()


def test_a_refused_cap_leaves_no_key_behind(user):
    with pytest.raises(InvalidAmount):
        api_key_create_with_caps(user=user, caps=SpendCaps(-1, None), **POLICIES)
    assert not ApiKey.objects.exists()


def test_a_refused_cap_leaves_the_policies_unchanged_too(user):
    api_key = api_key_create_with_caps(user=user, caps=SpendCaps(1_000, None),
                                       **POLICIES).api_key
    KeyBudget.objects.filter(api_key=api_key).update(spent_micros=800)

    with pytest.raises(InvalidAmount):
        api_key_configure(api_key=api_key, caps=SpendCaps(700, None),
                          **{**POLICIES, "name": "renamed", "rpm": 50})

    api_key.refresh_from_db()
    assert (api_key.name, api_key.rpm) == ("ci", 5)
    assert key_spend_caps(api_key=ApiKey.objects.get(pk=api_key.pk)) == SpendCaps(1_000, None)


def test_configure_changes_policies_and_caps_together(user):
    api_key = api_key_create_with_caps(user=user, caps=SpendCaps(), **POLICIES).api_key

    api_key_configure(api_key=api_key, caps=SpendCaps(None, 3_000_000),
                      **{**POLICIES, "tpm": 1_000})

    fresh = ApiKey.objects.get(pk=api_key.pk)
    assert fresh.tpm == 1_000
    assert key_spend_caps(api_key=fresh) == SpendCaps(None, 3_000_000)
    assert fresh.status == "active"
