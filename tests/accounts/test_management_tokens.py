"""Management tokens: their format, what is stored, and staff revoking them."""

from __future__ import annotations

from accounts.keys import key_is_well_formed
from accounts.models import ManagementToken
from accounts.selectors import api_key_authenticate, management_token_authenticate
from accounts.services import api_key_create, management_token_create
from accounts.tokens import TOKEN_LENGTH, TOKEN_PREFIX, token_is_well_formed


def test_a_token_has_its_own_prefix_and_is_no_api_key(user):
    secret = management_token_create(user=user, name="ci").secret

    assert secret.startswith(TOKEN_PREFIX)
    assert len(secret) == TOKEN_LENGTH
    assert token_is_well_formed(secret)
    assert not key_is_well_formed(secret)
    assert api_key_authenticate(raw_key=secret) is None


def test_an_api_key_is_no_token(user):
    secret = api_key_create(user=user).secret

    assert not token_is_well_formed(secret)
    assert management_token_authenticate(raw_token=secret) is None


def test_only_the_prefix_and_digest_are_stored(user):
    created = management_token_create(user=user)

    row = ManagementToken.objects.values().get(pk=created.token.pk)

    assert created.secret not in str(row)
    assert row["prefix"] == created.secret[: len(row["prefix"])]
    assert len(row["digest"]) == 64


def test_a_token_with_the_right_prefix_and_a_wrong_secret_is_refused(user):
    secret = management_token_create(user=user).secret
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")

    assert management_token_authenticate(raw_token=secret) is not None
    assert management_token_authenticate(raw_token=forged) is None


def test_staff_revoke_tokens_from_the_admin_but_cannot_create_them(admin_client, user):
    token = management_token_create(user=user, name="leaked").token

    listed = admin_client.get("/admin/accounts/managementtoken/")
    revoked = admin_client.post("/admin/accounts/managementtoken/", {
        "action": "revoke_tokens", "_selected_action": [token.pk]})

    assert listed.status_code == 200
    assert token.prefix in listed.content.decode()
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert admin_client.get("/admin/accounts/managementtoken/add/").status_code == 403
