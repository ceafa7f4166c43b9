"""CSRF on every form, owner-only lookups on every URL that takes an id, no mass assignment."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey
from billing.models import KeyBudget, LedgerEntry, UsageRecord
from billing.selectors import wallet_balance
from tests.portal.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def others_key(other, make_key, make_usage) -> ApiKey:
    api_key = make_key(other, name="not yours")
    make_usage(other, api_key=api_key, model="secret-model")
    return api_key


@pytest.mark.parametrize(("method", "name", "data"), [
    ("get", "portal:key_edit", {}),
    ("post", "portal:key_edit", {"name": "mine now", "rpm": "1"}),
    ("get", "portal:key_revoke", {}),
    ("post", "portal:key_revoke", {}),
])
def test_another_users_key_is_not_found_on_every_key_page(member_client, others_key, method,
                                                          name, data):
    response = getattr(member_client, method)(reverse(name, args=[others_key.pk]), data)

    assert response.status_code == 404
    others_key.refresh_from_db()
    assert others_key.revoked_at is None
    assert others_key.name == "not yours"
    assert others_key.rpm is None


@pytest.mark.parametrize("name", ["portal:key_edit", "portal:key_revoke"])
def test_a_key_that_never_existed_is_the_same_404(member_client, name):
    assert member_client.get(reverse(name, args=[999_999])).status_code == 404


@pytest.mark.parametrize("name", ["portal:usage", "portal:usage_csv"])
def test_filtering_usage_by_another_users_key_is_not_found(member_client, others_key, name):
    assert member_client.get(reverse(name), {"key": others_key.pk}).status_code == 404


def test_the_usage_pages_show_only_ones_own_requests(member_client, member, others_key,
                                                     make_usage):
    mine = make_usage(member, model="my-model")

    page = member_client.get(reverse("portal:usage"))
    records = list(page.context["page"].object_list)
    keys = page.context["keys"]

    assert records == [mine]
    assert others_key not in keys
    assert "secret-model" not in page.content.decode()
    assert UsageRecord.objects.filter(model="secret-model").exists()


def test_the_keys_page_lists_only_ones_own_keys(member_client, others_key):
    page = member_client.get(reverse("portal:keys")).content.decode()

    assert others_key.prefix not in page


def test_posted_owner_and_balance_fields_are_ignored(member_client, member, other):
    member_client.post(reverse("portal:keys"), {
        "name": "mine", "user": other.pk, "user_id": other.pk, "prefix": "sk-br-chosen",
        "digest": "0" * 64, "revoked_at": "", "budget": "1", "spent_micros": "0"})
    member_client.post(reverse("portal:settings"), {
        "threshold_usd": "1", "email": "on", "user": other.pk, "posted_micros": "999999999",
        "balance": "1000000"})

    api_key = ApiKey.objects.get(name="mine")
    assert api_key.user == member
    assert api_key.prefix != "sk-br-chosen"
    assert api_key.digest != "0" * 64
    assert not KeyBudget.objects.filter(api_key=api_key).exists()
    assert wallet_balance(user=member).posted_micros == 10_000_000
    assert not LedgerEntry.objects.filter(wallet__user=other).exists()  # nothing credited
    assert not ApiKey.objects.filter(user=other).exists()


@pytest.fixture
def csrf_client(member) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    return client


@pytest.mark.parametrize(("name", "args", "data"), [
    ("portal:keys", [], {"name": "forged"}),
    ("portal:key_edit", ["own"], {"name": "forged"}),
    ("portal:key_revoke", ["own"], {}),
    ("portal:voucher_redeem", [], {"code": "ABCD-EFGH"}),
    ("portal:checkout_create", [], {"amount_usd": "20"}),
    ("portal:settings", [], {"threshold_usd": "5", "email": "on"}),
    ("portal:password_change", [], {"old_password": PASSWORD, "new_password1": "x",
                                    "new_password2": "x"}),
    ("portal:logout", [], {}),
])
def test_every_form_refuses_a_post_without_the_csrf_token(csrf_client, member, make_key, name,
                                                          args, data):
    own = make_key(member, name="own")
    url = reverse(name, args=[own.pk] if args else [])

    response = csrf_client.post(url, data)

    assert response.status_code == 403
    own.refresh_from_db()
    assert own.name == "own"
    assert own.revoked_at is None
    assert ApiKey.objects.filter(user=member).count() == 1


@pytest.mark.parametrize("name", ["portal:login", "portal:signup", "portal:password_reset"])
def test_the_signed_out_forms_refuse_a_post_without_the_csrf_token(name):
    response = Client(enforce_csrf_checks=True).post(reverse(name), {"email": "a@example.com"})

    assert response.status_code == 403


def test_a_form_with_its_csrf_token_goes_through(csrf_client, member):
    page = csrf_client.get(reverse("portal:keys"))
    token = page.context["csrf_token"]

    response = csrf_client.post(reverse("portal:keys"), {"name": "real",
                                                        "csrfmiddlewaretoken": str(token)})

    assert response.status_code == 200
    assert ApiKey.objects.filter(user=member, name="real").exists()
