from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.keys import key_digest
from accounts.models import ApiKey
from accounts.selectors import api_key_authenticate
from billing.models import KeyBudget

pytestmark = pytest.mark.django_db


def _create(client, **fields):
    return client.post(reverse("portal:keys"), {"name": "", **fields})


def test_creating_a_key_shows_its_secret_once(member_client, member):
    response = _create(member_client, name="production")

    assert response.status_code == 200
    secret = response.context["secret"]
    page = response.content.decode()
    assert secret in page
    assert 'data-copy-from="new-secret"' in page
    assert "no-store" in response["Cache-Control"]
    api_key = ApiKey.objects.get(user=member)
    assert api_key.name == "production"
    assert api_key.digest == key_digest(secret)
    assert api_key_authenticate(raw_key=secret) == api_key
    # Nothing keeps it: not the session, not a cookie, not the list page.
    assert secret not in str(dict(member_client.session))
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    listing = member_client.get(reverse("portal:keys")).content.decode()
    assert api_key.prefix in listing
    assert secret not in listing


def test_a_key_can_be_created_with_policies_and_spend_caps(member_client, member):
    expiry = (timezone.now() + timedelta(days=30)).replace(second=0, microsecond=0)
    _create(member_client, name="capped", rpm="60", tpm="10000", max_concurrency="2",
            lifetime_cap_usd="25", monthly_cap_usd="5.50",
            expires_at=expiry.strftime("%Y-%m-%dT%H:%M"),
            allowed_models="gpt-4o-mini, test-model", allowed_ips="10.1.2.3/8\n192.0.2.1")

    api_key = ApiKey.objects.get(user=member)
    assert (api_key.rpm, api_key.tpm, api_key.max_concurrency) == (60, 10000, 2)
    assert api_key.expires_at == expiry
    assert api_key.allowed_models == ["gpt-4o-mini", "test-model"]
    assert api_key.allowed_ips == ["10.0.0.0/8", "192.0.2.1/32"]
    assert (api_key.budget.lifetime_limit_micros,
            api_key.budget.monthly_limit_micros) == (25_000_000, 5_500_000)


def test_a_key_without_caps_gets_no_budget_row(member_client, member):
    _create(member_client, name="plain")

    assert not KeyBudget.objects.filter(api_key__user=member).exists()


@pytest.mark.parametrize(("fields", "message"), [
    ({"rpm": "0"}, "greater than or equal to 1"),
    ({"lifetime_cap_usd": "1.0000001"}, "finer than one micro-USD"),
    ({"monthly_cap_usd": "-1"}, "zero or more"),
    ({"allowed_ips": "not-a-network"}, "is not an IP network"),
    ({"expires_at": "2001-01-01T00:00"}, "Choose a time in the future"),
])
def test_bad_policies_are_refused_and_no_key_is_made(member_client, member, fields, message):
    response = _create(member_client, name="bad", **fields)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ApiKey.objects.filter(user=member).exists()


def test_the_list_shows_prefix_status_last_use_and_spend(member_client, member, make_key,
                                                         make_usage):
    used = make_key(member, name="used")
    ApiKey.objects.filter(pk=used.pk).update(last_used_at=timezone.now() - timedelta(hours=2))
    make_usage(member, api_key=used, cost_micros=1_500_000)
    revoked = make_key(member, name="old")
    member_client.post(reverse("portal:key_revoke", args=[revoked.pk]))

    page = member_client.get(reverse("portal:keys")).content.decode()

    assert f"<code>{used.prefix}…</code>" in page
    assert f"<code>{revoked.prefix}…</code>" in page
    assert "2\xa0hours ago" in page
    assert "never" in page
    assert "$1.50" in page
    assert 'class="badge revoked"' in page
    assert 'class="badge active"' in page


def test_editing_a_key_changes_its_policies_and_caps(member_client, member, make_key):
    api_key = make_key(member, name="before")

    response = member_client.post(reverse("portal:key_edit", args=[api_key.pk]), {
        "name": "after", "rpm": "30", "tpm": "", "max_concurrency": "4",
        "lifetime_cap_usd": "", "monthly_cap_usd": "12.345678", "expires_at": "",
        "allowed_models": "test-model", "allowed_ips": ""})

    assert response["Location"] == reverse("portal:keys")
    api_key.refresh_from_db()
    assert (api_key.name, api_key.rpm, api_key.tpm, api_key.max_concurrency) == (
        "after", 30, None, 4)
    assert api_key.allowed_models == ["test-model"]
    budget = KeyBudget.objects.get(api_key=api_key)
    assert (budget.lifetime_limit_micros, budget.monthly_limit_micros) == (None, 12_345_678)


def test_the_edit_form_shows_the_current_values(member_client, member, make_key):
    api_key = make_key(member, name="shown", rpm=15, allowed_ips=["192.0.2.0/24"])
    member_client.post(reverse("portal:key_edit", args=[api_key.pk]), {
        "name": "shown", "rpm": "15", "monthly_cap_usd": "7.5",
        "allowed_ips": "192.0.2.0/24"})

    form = member_client.get(reverse("portal:key_edit", args=[api_key.pk])).context["form"]

    assert form.initial["rpm"] == 15
    assert form.initial["monthly_cap_usd"] == "7.5"
    assert form.initial["allowed_ips"] == "192.0.2.0/24"


def test_an_edit_that_fails_changes_nothing(member_client, member, make_key, make_usage):
    api_key = make_key(member, name="spent")
    KeyBudget.objects.create(api_key=api_key, spent_micros=2_000_000)

    # A cap below what the key already spent is refused; the rename in the same form is not
    # applied either.
    response = member_client.post(reverse("portal:key_edit", args=[api_key.pk]), {
        "name": "renamed", "lifetime_cap_usd": "1"})

    assert response.status_code == 200
    assert "cannot be below what the key has already spent" in response.content.decode()
    api_key.refresh_from_db()
    assert api_key.name == "spent"


def test_a_kept_expiry_in_the_past_does_not_block_other_edits(member_client, member,
                                                              make_key):
    api_key = make_key(member, name="expired")
    past = timezone.now() - timedelta(days=1, microseconds=123)
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=past)
    form = member_client.get(reverse("portal:key_edit", args=[api_key.pk])).context["form"]
    shown = form["expires_at"].value()

    response = member_client.post(reverse("portal:key_edit", args=[api_key.pk]), {
        "name": "still expired", "expires_at": form.fields["expires_at"].widget.format_value(
            shown)})

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.name == "still expired"
    assert api_key.expires_at == past


def test_revoking_asks_first_then_revokes_on_post(member_client, member, make_key):
    api_key = make_key(member, name="doomed")
    secret_check = ApiKey.objects.get(pk=api_key.pk)

    confirm = member_client.get(reverse("portal:key_revoke", args=[api_key.pk]))
    assert confirm.status_code == 200
    assert "Revoke the key" in confirm.content.decode()
    secret_check.refresh_from_db()
    assert secret_check.revoked_at is None  # a GET changes nothing

    response = member_client.post(reverse("portal:key_revoke", args=[api_key.pk]))

    assert response["Location"] == reverse("portal:keys")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    page = member_client.get(reverse("portal:keys")).content.decode()
    assert f"Revoked the key {api_key.prefix}" in page


def test_a_revoked_key_cannot_be_edited(member_client, member, make_key):
    api_key = make_key(member, name="gone")
    member_client.post(reverse("portal:key_revoke", args=[api_key.pk]))

    response = member_client.post(reverse("portal:key_edit", args=[api_key.pk]),
                                  {"name": "back to life"})

    assert "This key is revoked; it cannot be changed." in response.content.decode()
    api_key.refresh_from_db()
    assert api_key.name == "gone"
