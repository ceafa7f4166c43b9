from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.errors import AccountsError, ApiKeyNotFound
from accounts.selectors import api_key_of, api_keys_of
from accounts.services import api_key_create, api_key_revoke, api_key_update


def _update(api_key, **changes):
    fields = dict(name=api_key.name, expires_at=api_key.expires_at, rpm=api_key.rpm,
                  tpm=api_key.tpm, max_concurrency=api_key.max_concurrency,
                  allowed_models=api_key.allowed_models, allowed_ips=api_key.allowed_ips)
    fields.update(changes)
    return api_key_update(api_key=api_key, **fields)


def test_an_update_changes_the_policies_and_keeps_owner_and_secret(user):
    created = api_key_create(user=user, name="old")
    expires = timezone.now() + timedelta(days=3)

    updated = _update(created.api_key, name=" new ", rpm=10, tpm=1000, max_concurrency=2,
                      allowed_models=["gpt-x"], allowed_ips=["10.0.0.0/8"], expires_at=expires)

    updated.refresh_from_db()
    assert (updated.name, updated.rpm, updated.tpm, updated.max_concurrency) == ("new", 10,
                                                                                 1000, 2)
    assert updated.allowed_models == ["gpt-x"]
    assert updated.allowed_ips == ["10.0.0.0/8"]
    assert updated.expires_at == expires
    assert updated.user_id == user.pk
    assert updated.digest == created.api_key.digest


@pytest.mark.parametrize("changes", [
    {"rpm": 0}, {"tpm": -1}, {"max_concurrency": 2**31},
    {"allowed_ips": ["not-a-network"]},
    {"expires_at": timezone.now() - timedelta(days=1)},
])
def test_bad_policies_are_refused_and_nothing_changes(user, changes):
    api_key = api_key_create(user=user, name="kept", rpm=5).api_key

    with pytest.raises(AccountsError):
        _update(api_key, name="changed", **changes)

    api_key.refresh_from_db()
    assert (api_key.name, api_key.rpm) == ("kept", 5)


def test_a_revoked_key_cannot_be_changed(user):
    api_key = api_key_create(user=user).api_key
    api_key_revoke(prefix=api_key.prefix)

    with pytest.raises(AccountsError, match="revoked"):
        _update(api_key, rpm=3)


def test_a_user_sees_only_their_own_keys(user, make_user):
    other = make_user()
    mine = api_key_create(user=user).api_key
    theirs = api_key_create(user=other).api_key

    assert list(api_keys_of(user=user)) == [mine]
    assert api_key_of(user=user, key_id=mine.pk) == mine
    with pytest.raises(ApiKeyNotFound):
        api_key_of(user=user, key_id=theirs.pk)
