"""The portal page for management tokens: create (secret shown once), list, revoke."""

from __future__ import annotations

import re

from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ManagementToken
from accounts.services import management_token_create


def _secret_in(page: str) -> str:
    return re.search(r'data-testid="new-token">([^<]+)<', page).group(1)


def test_a_token_made_on_the_page_is_shown_once_and_works_on_the_api(member_client, member):
    created = member_client.post("/tokens/", {"name": "deploy"})

    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"] or "max-age=0" in created["Cache-Control"]
    secret = _secret_in(created.content.decode())
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/balance").status_code == 200
    listed = member_client.get("/tokens/").content.decode()
    assert ManagementToken.objects.get(owner=member).prefix in listed
    assert secret not in listed


def test_revoking_on_the_page_stops_the_token(member_client, member):
    created = management_token_create(user=member, name="old")

    response = member_client.post(f"/tokens/{created.token.pk}/revoke/")

    assert response.status_code == 302
    created.token.refresh_from_db()
    assert created.token.revoked_at is not None


def test_another_users_token_cannot_be_revoked_from_the_page(member_client, other):
    theirs = management_token_create(user=other).token

    response = member_client.post(f"/tokens/{theirs.pk}/revoke/")

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_the_page_needs_a_login_and_its_forms_a_csrf_token(client, member):
    assert client.get("/tokens/").status_code == 302
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(member)

    assert csrf_client.post("/tokens/", {"name": "forged"}).status_code == 403
    assert not ManagementToken.objects.filter(owner=member).exists()


def test_the_nav_links_to_the_page(member_client):
    assert 'href="/tokens/"' in member_client.get("/").content.decode()
