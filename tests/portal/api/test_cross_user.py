"""Another user's objects: every id is a 404 (as if it never existed), every list holds
only the caller's own rows, and nothing about ownership or money can be written."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey, ManagementToken
from accounts.services import management_token_create
from billing.models import KeyBudget, LedgerEntry
from billing.selectors import wallet_balance
from tests.portal.api.conftest import session_client


@pytest.fixture
def others_key(other, make_key, make_usage) -> ApiKey:
    key = make_key(other, name="theirs")
    KeyBudget.objects.create(api_key=key, lifetime_limit_micros=5_000_000)
    make_usage(other, api_key=key, cost_micros=777, model="their-model")
    return key


def _unchanged(key: ApiKey) -> bool:
    before = ApiKey.objects.get(pk=key.pk)
    return (before.name, before.revoked_at, before.rpm) == (key.name, key.revoked_at, key.rpm)


def test_another_users_key_id_is_a_404_on_every_key_endpoint(api, others_key):
    responses = [
        api.get(f"/api/keys/{others_key.pk}"),
        api.patch(f"/api/keys/{others_key.pk}", {"name": "mine now", "rpm": 1}, format="json"),
        api.patch(f"/api/keys/{others_key.pk}", {"lifetime_cap_usd": "999"}, format="json"),
        api.delete(f"/api/keys/{others_key.pk}"),
        api.get(f"/api/usage?key={others_key.pk}"),
        api.get(f"/api/usage?key={others_key.pk}&format=csv"),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert all(r.json()["error"]["code"] == "not_found" for r in responses)
    # The same answer as an id that never existed, so ids cannot be probed.
    assert api.get("/api/keys/999999999").json() == responses[0].json()
    assert _unchanged(others_key)
    assert KeyBudget.objects.get(api_key=others_key).lifetime_limit_micros == 5_000_000


def test_another_users_token_id_is_a_404(member, other):
    theirs = management_token_create(user=other, name="theirs").token

    response = session_client(member).delete(f"/api/tokens/{theirs.pk}")

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_lists_and_sums_never_show_another_users_rows(api, member, others_key, make_key,
                                                      make_usage):
    mine = make_key(member, name="mine")
    make_usage(member, api_key=mine, cost_micros=5)
    management_token_create(user=others_key.user, name="their token")

    keys = api.get("/api/keys").json()["results"]
    usage = api.get("/api/usage").json()["results"]
    csv = b"".join(api.get("/api/usage?format=csv")).decode()
    daily = api.get("/api/usage/daily").json()
    models = api.get("/api/usage/models").json()
    balance = api.get("/api/balance").json()

    assert [row["id"] for row in keys] == [mine.pk]
    assert [row["key_id"] for row in usage] == [mine.pk]
    assert "their-model" not in csv
    assert others_key.prefix not in csv
    assert sum(day["cost_micros"] for day in daily) == 5
    assert [row["model"] for row in models] == ["test-model"]
    assert balance["spend_today_micros"] == 5


def test_the_token_list_never_shows_another_users_tokens(member, other):
    management_token_create(user=other, name="theirs")
    mine = management_token_create(user=member, name="mine").token

    rows = session_client(member).get("/api/tokens").json()["results"]

    assert [row["id"] for row in rows] == [mine.pk]


OWNERSHIP_AND_MONEY = {
    "user": 1, "user_id": 1, "owner": 1, "prefix": "sk-br-chosen00000", "digest": "0" * 64,
    "revoked_at": None, "last_used_at": None, "created_at": "2000-01-01T00:00:00Z",
    "balance": "1000000", "posted_micros": 10**12, "spent_micros": 0, "id": 1, "secret": "x",
}


def test_creating_a_key_with_ownership_or_money_fields_is_refused_and_changes_nothing(
        api, member, other):
    balance_before = wallet_balance(user=member)
    for field, value in OWNERSHIP_AND_MONEY.items():
        response = api.post("/api/keys", {"name": "sneaky", field: value}, format="json")

        assert response.status_code == 400, field
        assert "cannot be set" in response.json()["error"]["fields"][field][0]
    assert not ApiKey.objects.filter(name="sneaky").exists()
    assert wallet_balance(user=member) == balance_before
    assert not LedgerEntry.objects.filter(wallet__user=other).exists()  # nothing credited


def test_patching_ownership_or_money_fields_is_refused_and_changes_nothing(
        api, member, other, make_key):
    key = make_key(member, name="kept")
    before = ApiKey.objects.values().get(pk=key.pk)
    for field, value in {**OWNERSHIP_AND_MONEY, "user": other.pk, "owner": other.pk,
                         "revoked_at": timezone.now().isoformat(),
                         "status": "active"}.items():
        response = api.patch(f"/api/keys/{key.pk}", {field: value, "name": "changed"},
                             format="json")

        assert response.status_code == 400, field
    assert ApiKey.objects.values().get(pk=key.pk) == before
    assert not KeyBudget.objects.filter(api_key=key).exists()


def test_a_token_cannot_be_created_for_someone_else(member, other):
    response = session_client(member).post(
        "/api/tokens", {"name": "t", "owner": other.pk, "user": other.pk}, format="json")

    assert response.status_code == 400
    assert not ManagementToken.objects.filter(owner=other).exists()
    assert not ManagementToken.objects.filter(owner=member).exists()


def test_a_voucher_credits_the_caller_and_nobody_named_in_the_body(api, member, other):
    from billing.services.vouchers import voucher_batch_create

    [code] = voucher_batch_create(amount_micros=1_000_000, count=1,
                                  expires_at=timezone.now() + timedelta(days=1))

    response = api.post("/api/vouchers/redeem", {"code": code, "user": other.pk},
                        format="json")

    assert response.status_code == 400
    assert wallet_balance(user=other).posted_micros == 0
