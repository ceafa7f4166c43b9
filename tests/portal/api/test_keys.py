"""Keys over the API: create (secret once), read, change policies and caps, revoke."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey
from billing.models import KeyBudget
from proxy.entry.auth import authenticate
from proxy.ground.cache import clear_all_caches
from proxy.ground.errors import ApiError


def _v1_caller(secret: str):
    """What /v1's key authentication makes of ``secret``."""
    from django.test import RequestFactory

    clear_all_caches()
    request = RequestFactory().post("/v1/chat/completions",
                                    HTTP_AUTHORIZATION=f"Bearer {secret}",
                                    REMOTE_ADDR="127.0.0.1")
    return asyncio.run(authenticate(request))


def test_a_created_key_is_returned_with_its_secret_once(api, member):
    created = api.post("/api/keys", {"name": "ci", "rpm": 60}, format="json")

    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith(body["prefix"])
    assert body["name"] == "ci"
    assert body["rpm"] == 60
    assert body["status"] == "active"
    assert created["Cache-Control"] == "no-store"
    key = ApiKey.objects.get(pk=body["id"])
    assert key.user == member
    assert key.prefix == body["prefix"]

    fetched = api.get(f"/api/keys/{body['id']}").json()
    listed = api.get("/api/keys").json()
    assert "secret" not in fetched
    assert all("secret" not in row for row in listed["results"])
    assert body["secret"] not in str(fetched) + str(listed)


@pytest.mark.django_db(transaction=True)
def test_a_key_created_over_the_api_works_on_v1(client_for, make_user):
    user = make_user()
    secret = client_for(user).post("/api/keys", {"name": "app"}, format="json").json()["secret"]

    caller = _v1_caller(secret)

    assert caller.user_id == user.pk


def test_the_list_is_paginated_newest_first(api, member, make_key):
    keys = [make_key(member, name=f"k{i}") for i in range(3)]

    first = api.get("/api/keys?page_size=2").json()
    second = api.get(first["next"]).json()

    assert first["count"] == 3
    assert [row["id"] for row in first["results"] + second["results"]] == [
        key.pk for key in reversed(keys)]


def test_spend_caps_are_exact_to_the_micro_usd(api):
    body = api.post("/api/keys", {"lifetime_cap_usd": "12.345678", "monthly_cap_usd": "0.000001"},
                    format="json").json()

    budget = KeyBudget.objects.get(api_key_id=body["id"])
    assert budget.lifetime_limit_micros == 12_345_678
    assert budget.monthly_limit_micros == 1
    assert body["lifetime_cap_usd"] == "12.345678"
    assert body["lifetime_cap_micros"] == 12_345_678
    assert body["monthly_cap_usd"] == "0.000001"


def test_a_cap_finer_than_a_micro_usd_or_as_a_float_is_refused_and_no_key_is_made(api, member):
    finer = api.post("/api/keys", {"lifetime_cap_usd": "1.0000001"}, format="json")
    as_float = api.post("/api/keys", {"monthly_cap_usd": 0.1}, format="json")

    assert finer.status_code == as_float.status_code == 400
    assert "6 decimal places" in finer.json()["error"]["fields"]["lifetime_cap_usd"][0]
    assert "not a JSON number" in as_float.json()["error"]["fields"]["monthly_cap_usd"][0]
    assert not ApiKey.objects.filter(user=member).exists()


def test_a_key_without_caps_keeps_no_budget_row(api):
    body = api.post("/api/keys", {"name": "free"}, format="json").json()

    assert body["lifetime_cap_usd"] is None
    assert body["monthly_cap_micros"] is None
    assert not KeyBudget.objects.filter(api_key_id=body["id"]).exists()


def test_bad_input_gets_one_clear_message_per_field(api, member):
    response = api.post("/api/keys", {
        "rpm": 0, "tpm": "many", "allowed_ips": ["not-a-network"],
        "expires_at": (timezone.now() - timedelta(days=1)).isoformat(),
        "allowed_models": "gpt-4o"}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"rpm", "tpm", "allowed_ips", "expires_at", "allowed_models"}
    assert "greater than or equal to 1" in error["fields"]["rpm"][0]
    assert "CIDR" in str(error["fields"]["allowed_ips"])
    assert "past" in error["fields"]["expires_at"][0]
    assert "rpm: " in error["message"]
    assert not ApiKey.objects.filter(user=member).exists()


def test_a_body_that_is_not_json_is_a_400_in_the_error_format(api):
    response = api.generic("POST", "/api/keys", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_patch_changes_only_the_fields_sent(api, member, make_key):
    key = make_key(member, name="old", rpm=10, allowed_models=["a"])

    response = api.patch(f"/api/keys/{key.pk}", {"name": "new", "tpm": 1000,
                                                  "allowed_ips": ["10.1.2.3/8"]}, format="json")

    assert response.status_code == 200
    key.refresh_from_db()
    assert (key.name, key.rpm, key.tpm, key.allowed_models, key.allowed_ips) == (
        "new", 10, 1000, ["a"], ["10.0.0.0/8"])
    assert response.json()["allowed_ips"] == ["10.0.0.0/8"]


def test_patch_sets_and_clears_spend_caps(api, member, make_key):
    key = make_key(member)

    api.patch(f"/api/keys/{key.pk}", {"monthly_cap_usd": "5.5"}, format="json")
    budget = KeyBudget.objects.get(api_key=key)
    assert (budget.lifetime_limit_micros, budget.monthly_limit_micros) == (None, 5_500_000)

    api.patch(f"/api/keys/{key.pk}", {"lifetime_cap_usd": "7", "monthly_cap_usd": None},
              format="json")
    budget.refresh_from_db()
    assert (budget.lifetime_limit_micros, budget.monthly_limit_micros) == (7_000_000, None)

    api.patch(f"/api/keys/{key.pk}", {"name": "renamed"}, format="json")  # caps untouched
    budget.refresh_from_db()
    assert budget.lifetime_limit_micros == 7_000_000


def test_a_cap_below_what_the_key_already_spent_is_refused(api, member, make_key):
    key = make_key(member)
    KeyBudget.objects.create(api_key=key, spent_micros=2_000_000)

    response = api.patch(f"/api/keys/{key.pk}", {"lifetime_cap_usd": "1"}, format="json")

    assert response.status_code == 400
    assert "already spent" in response.json()["error"]["message"]
    assert KeyBudget.objects.get(api_key=key).lifetime_limit_micros is None


def test_delete_revokes_and_the_key_stays_listed(api, member, make_key):
    key = make_key(member)

    response = api.delete(f"/api/keys/{key.pk}")

    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api.get("/api/keys").json()["results"][0]["status"] == "revoked"
    assert api.delete(f"/api/keys/{key.pk}").status_code == 200  # harmless twice


def test_a_revoked_key_cannot_be_changed(api, member, make_key):
    key = make_key(member)
    api.delete(f"/api/keys/{key.pk}")

    response = api.patch(f"/api/keys/{key.pk}", {"name": "back"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "A revoked API key cannot be changed."


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_over_the_api_is_refused_on_v1(client_for, make_user):
    user = make_user()
    client = client_for(user)
    created = client.post("/api/keys", {}, format="json").json()
    client.delete(f"/api/keys/{created['id']}")

    with pytest.raises(ApiError) as refused:
        _v1_caller(created["secret"])

    assert refused.value.status == 401
