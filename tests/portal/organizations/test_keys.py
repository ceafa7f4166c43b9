"""An organization's keys in the portal: members see and revoke their own, admins every key
and service keys; a new key's secret is shown once."""

from __future__ import annotations

import re

import pytest

from accounts.models import ApiKey
from accounts.selectors import api_keys_of
from tests.portal.organizations.conftest import signed_in

pytestmark = pytest.mark.django_db


def _prefixes(page: str) -> set[str]:
    return set(re.findall(r'data-prefix="([^"]+)"', page))


def test_a_member_sees_only_their_own_keys(team):
    page = signed_in(team.users["member"]).get(
        f"/orgs/{team.organization.pk}/keys/").content.decode()

    assert _prefixes(page) == {team.keys["member"].prefix}
    assert "Service key" not in page


def test_an_admin_sees_every_key_with_its_owner_and_may_make_service_keys(team):
    page = signed_in(team.users["admin"]).get(
        f"/orgs/{team.organization.pk}/keys/").content.decode()

    assert _prefixes(page) == {team.keys[who].prefix for who in
                               ("owner", "admin", "billing", "member", "target", "service")}
    # The checkbox sits inside its label, which names it.
    assert re.search(r'<label class="check"><input type="checkbox" name="service"[^>]*> '
                     r"Service key", page)
    assert '<span class="badge">service</span>' in page


def test_a_new_key_spends_the_organization_and_its_secret_is_shown_once(team):
    client = signed_in(team.users["member"])

    response = client.post(f"/orgs/{team.organization.pk}/keys/", {"name": "laptop"})

    page = response.content.decode()
    secret = re.search(r'data-testid="new-secret">([^<]+)<', page).group(1)
    key = ApiKey.objects.get(name="laptop")
    assert secret.startswith(key.prefix)
    assert (key.organization_id, key.user_id, key.service) == (
        team.organization.pk, team.users["member"].pk, False)
    assert "no-cache" in response["Cache-Control"]
    assert secret not in client.get(f"/orgs/{team.organization.pk}/keys/").content.decode()
    assert key not in api_keys_of(user=team.users["member"])  # not a personal key


def test_a_member_revokes_their_own_key(team):
    key = team.keys["member"]
    signed_in(team.users["member"]).post(f"/orgs/{team.organization.pk}/keys/{key.pk}/revoke/")

    key.refresh_from_db()
    assert key.revoked_at is not None


def test_a_forged_service_key_from_a_member_is_refused(team):
    response = signed_in(team.users["member"]).post(
        f"/orgs/{team.organization.pk}/keys/", {"name": "sneaky", "service": "on"})

    assert response.status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()
