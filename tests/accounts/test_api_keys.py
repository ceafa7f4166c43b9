from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from accounts.authentication import ApiKeyAuthentication
from accounts.keys import KEY_LENGTH, SECRET_BYTES, key_digest
from accounts.selectors import api_key_authenticate
from accounts.services import api_key_create, api_key_revoke


def _every_text_value_in_the_database() -> list[str]:
    """Every value of every text-like column of every table, as text."""
    values: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            for column in connection.introspection.get_table_description(cursor, table):
                if column.type_code in (25, 1043, 1042, 114, 3802):  # text, varchar, char, json
                    cursor.execute(f'SELECT "{column.name}"::text FROM "{table}"')
                    values.extend(row[0] for row in cursor.fetchall() if row[0])
    return values


def test_a_new_key_has_the_documented_format(user):
    created = api_key_create(user=user, name="ci")
    assert created.secret.startswith("sk-br-")
    assert len(created.secret) == KEY_LENGTH
    assert created.secret[6:].isalnum()
    # 32 random bytes in base62 need 43 characters; the public id comes on top.
    assert KEY_LENGTH - len("sk-br-") >= 43
    assert SECRET_BYTES >= 32
    assert created.api_key.prefix == created.secret[: len(created.api_key.prefix)]


def test_the_secret_is_nowhere_in_the_database_after_creation(user):
    created = api_key_create(user=user, name="secret-search")
    values = _every_text_value_in_the_database()
    assert any(created.api_key.prefix in v for v in values), "the search must see key rows"
    assert not any(created.secret in v for v in values)
    assert not any(created.secret[len(created.api_key.prefix):] in v for v in values)
    assert created.api_key.digest == key_digest(created.secret)


def test_the_right_key_authenticates_its_owner(user):
    created = api_key_create(user=user)
    assert api_key_authenticate(raw_key=created.secret) == created.api_key


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # same prefix, wrong secret
        lambda s: s[:-1],  # too short
        lambda s: "sk-xx-" + s[6:],  # wrong scheme
        lambda s: s + "0",  # too long
        lambda s: "",
        lambda s: s.replace(s[10], "!"),  # not base62
    ],
)
def test_a_wrong_key_is_refused(user, mangle):
    created = api_key_create(user=user)
    assert api_key_authenticate(raw_key=mangle(created.secret)) is None


def test_a_revoked_key_is_refused(user):
    created = api_key_create(user=user)
    api_key_revoke(prefix=created.api_key.prefix)
    assert api_key_authenticate(raw_key=created.secret) is None


def test_an_expired_key_is_refused(user):
    created = api_key_create(user=user, expires_at=timezone.now() + timedelta(minutes=1))
    type(created.api_key).objects.filter(pk=created.api_key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert api_key_authenticate(raw_key=created.secret) is None


def test_the_key_of_a_deactivated_user_is_refused(user):
    created = api_key_create(user=user)
    user.is_active = False
    user.save()
    assert api_key_authenticate(raw_key=created.secret) is None


class TestBearerAuthentication:
    def _authenticate(self, header: str | None):
        factory = APIRequestFactory()
        extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
        request = factory.post("/v1/chat/completions", **extra)
        from rest_framework.request import Request

        return ApiKeyAuthentication().authenticate(Request(request))

    def test_it_returns_the_owner_and_key_for_a_valid_bearer_token(self, user):
        created = api_key_create(user=user)
        assert self._authenticate(f"Bearer {created.secret}") == (user, created.api_key)

    def test_it_leaves_requests_without_a_header_to_other_authenticators(self, db):
        assert self._authenticate(None) is None

    @pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer sk-br-nope", "Token x"])
    def test_it_refuses_malformed_or_unknown_credentials(self, db, header):
        from rest_framework.exceptions import AuthenticationFailed

        with pytest.raises(AuthenticationFailed):
            self._authenticate(header)
