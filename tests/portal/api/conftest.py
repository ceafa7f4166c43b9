"""Clients of the self-service API: a signed-in session, or a management token."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import management_token_create


def session_client(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def token_client(user: User) -> APIClient:
    client = APIClient()
    secret = management_token_create(user=user, name="tests").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture(params=["session", "token"])
def client_for(request, db) -> Callable[[User], APIClient]:
    """Each test that takes it runs twice: signed in, and with a management token."""
    return session_client if request.param == "session" else token_client


@pytest.fixture
def api(client_for, member) -> APIClient:
    return client_for(member)
