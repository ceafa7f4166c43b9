"""Who may call /api: a session (with CSRF) or a management token; never a /v1 key. And a
management token never works on /v1."""

from __future__ import annotations

import asyncio

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from accounts.models import ManagementToken
from accounts.services import api_key_create, management_token_create, management_token_revoke
from accounts.tokens import TOKEN_LENGTH, TOKEN_PREFIX
from proxy.entry.auth import authenticate
from proxy.ground.cache import clear_all_caches
from proxy.ground.errors import ApiError
from tests.portal.api.conftest import session_client

ENDPOINTS = [("get", "/api/balance"), ("get", "/api/keys"), ("post", "/api/keys"),
             ("get", "/api/keys/1"), ("patch", "/api/keys/1"), ("delete", "/api/keys/1"),
             ("get", "/api/usage"), ("get", "/api/usage/daily"), ("get", "/api/usage/models"),
             ("post", "/api/vouchers/redeem"), ("get", "/api/tokens"), ("post", "/api/tokens"),
             ("delete", "/api/tokens/1"), ("get", "/api/topups"), ("get", "/api/topups/1"),
             ("post", "/api/topups/checkout")]


def _bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_an_anonymous_caller_with_401(db, method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_a_v1_api_key(member, method, path):
    secret = api_key_create(user=member, name="app").secret

    response = getattr(_bearer(secret), method)(path, {}, format="json")

    assert response.status_code == 401
    assert "API keys work only on /v1" in response.json()["error"]["message"]


def test_a_revoked_token_is_refused_at_once(member):
    created = management_token_create(user=member, name="ci")
    client = _bearer(created.secret)
    assert client.get("/api/balance").status_code == 200

    management_token_revoke(token=created.token)

    response = client.get("/api/balance")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid or revoked management token."


def test_a_token_of_a_deactivated_user_is_refused(member):
    client = _bearer(management_token_create(user=member).secret)
    member.is_active = False
    member.save()

    assert client.get("/api/balance").status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer br-mgmt-short",
                                    f"Bearer {TOKEN_PREFIX}{'x' * (TOKEN_LENGTH - 8)}"])
def test_a_malformed_or_unknown_token_is_refused(member, header):
    client = APIClient()
    client.force_login(member)  # a session does not rescue a bad Authorization header
    client.credentials(HTTP_AUTHORIZATION=header)

    assert client.get("/api/balance").status_code == 401


def test_a_token_records_when_it_was_last_used(member):
    created = management_token_create(user=member)
    assert created.token.last_used_at is None

    _bearer(created.secret).get("/api/balance")

    assert ManagementToken.objects.get(pk=created.token.pk).last_used_at is not None


def test_a_session_needs_the_csrf_token_to_change_anything(member):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(member)

    read = client.get("/api/keys")
    refused = client.post("/api/keys", {"name": "forged"}, format="json")

    assert read.status_code == 200
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]["message"]


def test_a_token_needs_no_csrf_token(member):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {management_token_create(user=member).secret}")

    assert client.post("/api/keys", {"name": "scripted"}, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_a_management_token_is_refused_on_v1(make_user):
    secret = management_token_create(user=make_user()).secret
    clear_all_caches()
    request = RequestFactory().post("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {secret}")

    with pytest.raises(ApiError) as refused:
        asyncio.run(authenticate(request))

    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")


def test_tokens_are_managed_from_a_session_only(member):
    created = management_token_create(user=member, name="ci")
    by_token = _bearer(created.secret)

    responses = [by_token.get("/api/tokens"), by_token.post("/api/tokens", {}, format="json"),
                 by_token.delete(f"/api/tokens/{created.token.pk}")]

    assert [r.status_code for r in responses] == [403, 403, 403]
    assert "sign in to the portal" in responses[0].json()["error"]["message"]
    assert ManagementToken.objects.filter(owner=member).count() == 1
    assert ManagementToken.objects.get(pk=created.token.pk).revoked_at is None


def test_a_session_creates_lists_and_revokes_tokens(member):
    client = session_client(member)

    created = client.post("/api/tokens", {"name": "deploy"}, format="json")
    body = created.json()

    assert created.status_code == 201
    assert created["Cache-Control"] == "no-store"
    assert body["secret"].startswith(TOKEN_PREFIX)
    assert body["secret"].startswith(body["prefix"])
    assert _bearer(body["secret"]).get("/api/balance").status_code == 200
    listed = client.get("/api/tokens").json()["results"]
    assert [(t["id"], t["name"]) for t in listed] == [(body["id"], "deploy")]
    assert "secret" not in listed[0]
    assert body["secret"] not in str(listed)

    revoked = client.delete(f"/api/tokens/{body['id']}")

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert _bearer(body["secret"]).get("/api/balance").status_code == 401



def test_an_unknown_path_under_api_is_a_json_404(db):
    for client in (APIClient(), _bearer("whatever")):
        response = client.post("/api/nothing/here", {}, format="json")

        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        assert "/api/docs/" in response.json()["error"]["message"]


def test_a_bug_is_a_json_500_without_a_traceback(api, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("portal.api.views.balance.wallet_balance", broken)

    response = api.get("/api/balance")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert "secret internals" not in response.content.decode()
    assert "secret internals" in caplog.text
