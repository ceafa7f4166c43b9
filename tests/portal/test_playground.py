"""The playground's page and its session key: one per session, never in the page, revoked on
sign-out, kept out of the key lists, and a real key on /v1 whose usage is marked."""

from __future__ import annotations

import openai
import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.playground import PLAYGROUND_KEY_LIFETIME
from billing.models import UsageRecord
from tests.live_router import LiveRouter
from tests.portal.conftest import PASSWORD

MODEL = "mock-gpt"


def _key(client: Client) -> str:
    response = client.post("/playground/key")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    return response.json()["key"]


def _playground_keys(user: User) -> list[ApiKey]:
    return list(ApiKey.objects.filter(user=user, playground=True))


@pytest.mark.django_db
def test_the_page_renders_for_a_signed_in_user_without_any_secret(member_client, member,
                                                                   mock_model) -> None:
    secret = _key(member_client)
    page = member_client.get("/playground/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'<option value="{MODEL}" selected>' in html
    assert 'data-key-url="/playground/key"' in html
    assert "portal/playground.js" in html
    assert secret not in html
    assert secret[:18] not in html


@pytest.mark.django_db
def test_a_stranger_is_sent_to_sign_in_and_gets_no_key(client) -> None:
    page = client.get("/playground/")
    assert page.status_code == 302
    assert page["Location"] == "/login/?next=/playground/"
    refused = client.post("/playground/key")
    assert refused.status_code == 403
    assert "key" not in refused.json()
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_key_is_minted_once_per_session_short_lived_and_flagged(member, client) -> None:
    client.force_login(member)
    first = _key(client)
    assert _key(client) == first  # the same session gets the same key
    [api_key] = _playground_keys(member)
    assert first.startswith(api_key.prefix)
    assert api_key.name == "playground"
    assert api_key.expires_at is not None
    assert api_key.expires_at <= timezone.now() + PLAYGROUND_KEY_LIFETIME
    # The session keeps no readable secret: only the key's id and an encrypted form.
    assert first not in str(dict(client.session))

    other_session = Client()
    other_session.force_login(member)
    assert _key(other_session) != first
    assert len(_playground_keys(member)) == 2


@pytest.mark.django_db
def test_a_key_revoked_elsewhere_is_replaced(member_client, member) -> None:
    first = _key(member_client)
    ApiKey.objects.filter(playground=True).update(revoked_at=timezone.now())
    second = _key(member_client)
    assert second != first
    assert [k.status for k in _playground_keys(member)].count("active") == 1


@pytest.mark.django_db
def test_the_key_endpoint_wants_the_csrf_token(member) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.post("/playground/key").status_code == 403
    assert not _playground_keys(member)


@pytest.mark.django_db
def test_signing_out_revokes_the_sessions_key(member) -> None:
    client = Client()
    assert client.post("/login/", {"username": member.email, "password": PASSWORD}
                       ).status_code == 302
    _key(client)
    kept = Client()
    kept.force_login(member)
    _key(kept)  # another session's key is not this sign-out's business

    client.post("/logout/")
    statuses = {k.pk: k.status for k in _playground_keys(member)}
    assert sorted(statuses.values()) == ["active", "revoked"]


@pytest.mark.django_db
def test_playground_keys_are_hidden_from_the_key_list_and_the_keys_api(member_client, member,
                                                                        make_key) -> None:
    make_key(member, name="mine")
    secret = _key(member_client)
    prefix = secret[:18]
    listed = member_client.get("/keys/").content.decode()
    assert "mine" in listed
    assert prefix not in listed
    rows = member_client.get("/api/keys").json()["results"]
    assert [row["name"] for row in rows] == ["mine"]
    # Nor can it be edited or revoked from the portal: it is the portal's, not the user's.
    playground_id = _playground_keys(member)[0].pk
    assert member_client.get(f"/keys/{playground_id}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_call_with_the_key_is_billed_and_its_usage_carries_the_playground_key(
        mock_model, router: LiveRouter, make_user) -> None:
    from billing.services import wallet_credit

    user = make_user(email="player@example.com", password=PASSWORD)
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="fund-player",
                  memo="test", kind="topup")
    client = Client()
    client.force_login(user)
    api = openai.OpenAI(base_url=router.base_url, api_key=_key(client), max_retries=0,
                        timeout=20)
    stream = api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello, playground"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    router.drain()
    [record] = UsageRecord.objects.filter(user=user)
    assert record.api_key is not None
    assert record.api_key.playground
    assert record.status == UsageRecord.Status.OK
    assert record.cost_micros > 0
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == record.completion_tokens
