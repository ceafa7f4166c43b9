import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.keys import key_digest
from accounts.models import ApiKey, User
from accounts.services import api_key_create
from billing.services import hold_create, wallet_credit

SECRET_RE = re.compile(r"sk-br-[0-9A-Za-z]{55}")


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.mark.parametrize("name", ["accounts_user", "accounts_apikey"])
def test_the_user_and_api_key_lists_render_for_staff(admin_client, user, name):
    api_key_create(user=user, name="laptop")
    assert admin_client.get(reverse(f"admin:{name}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"admin:{name}_add")).status_code == 200


def test_the_user_list_shows_each_available_balance_in_usd(admin_client, user, price):
    wallet_credit(user=user, amount_micros=12_500_000, idempotency_key="t", memo="")
    hold_create(user=user, hold_id="req-1", amount_micros=2_000_000, price=price,
                model=price.model)
    response = admin_client.get(reverse("admin:accounts_user_changelist"))
    rows = {row.email: row.available_micros for row in response.context["cl"].result_list}
    assert rows[user.email] == 10_500_000
    assert "10.500000" in response.text
    assert "0.000000" in response.text  # the staff user was never credited


def test_the_user_list_is_searched_by_email(admin_client, make_user):
    make_user(email="findme@example.com")
    make_user(email="other@example.com")
    response = admin_client.get(reverse("admin:accounts_user_changelist"), {"q": "findme"})
    assert [u.email for u in response.context["cl"].result_list] == ["findme@example.com"]


def test_a_user_is_added_by_email_with_a_lowercased_address_and_a_password(admin_client):
    response = admin_client.post(reverse("admin:accounts_user_add"), {
        "email": "New.Person@Example.COM", "name": "New Person", "usable_password": "true",
        "password1": "a-long-enough-passphrase", "password2": "a-long-enough-passphrase",
    })
    assert response.status_code == 302
    created = User.objects.get(email="new.person@example.com")
    assert created.name == "New Person"
    assert created.check_password("a-long-enough-passphrase")
    assert not created.is_staff


def test_a_user_can_be_added_without_a_password_for_api_only_use(admin_client):
    response = admin_client.post(reverse("admin:accounts_user_add"), {
        "email": "api-only@example.com", "usable_password": "false",
        "password1": "", "password2": "",
    })
    assert response.status_code == 302
    assert not User.objects.get(email="api-only@example.com").has_usable_password()


def test_adding_a_user_whose_email_differs_only_in_case_is_refused(admin_client, make_user):
    make_user(email="taken@example.com")
    response = admin_client.post(reverse("admin:accounts_user_add"), {
        "email": "Taken@Example.com", "usable_password": "false",
    })
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["email"] == [
        "A user with this email already exists."
    ]
    assert User.objects.filter(email__iexact="taken@example.com").count() == 1


def test_the_user_change_form_saves_name_and_staff_flag(admin_client, user):
    response = admin_client.post(reverse("admin:accounts_user_change", args=[user.pk]), {
        "email": user.email, "name": "Renamed", "is_active": "on", "is_staff": "on",
        "date_joined_0": "2024-01-02", "date_joined_1": "03:04:05",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors
    user.refresh_from_db()
    assert (user.name, user.is_staff, user.is_superuser) == ("Renamed", True, False)


def test_creating_an_api_key_shows_its_secret_once_and_stores_only_its_digest(
    admin_client, user
):
    response = admin_client.post(reverse("admin:accounts_apikey_add"),
                                 {"user": user.pk, "name": "ci"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secrets_shown = SECRET_RE.findall(response.text)
    assert len(secrets_shown) == 1
    secret = secrets_shown[0]
    # Shown in this response only: not in a cookie (where messages would go) nor the session.
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert secret not in str(dict(admin_client.session))

    api_key = ApiKey.objects.get()
    assert (api_key.user, api_key.name) == (user, "ci")
    assert api_key.digest == key_digest(secret)
    assert secret.startswith(api_key.prefix)
    assert secret not in {value for value in vars(api_key).values() if isinstance(value, str)}

    again = admin_client.get(reverse("admin:accounts_apikey_changelist"))
    assert secret not in again.text
    assert api_key.prefix in again.text


def test_an_api_key_cannot_be_created_already_expired(admin_client, user):
    past = timezone.now() - timedelta(days=1)
    response = admin_client.post(reverse("admin:accounts_apikey_add"), {
        "user": user.pk, "expires_at_0": past.strftime("%Y-%m-%d"),
        "expires_at_1": past.strftime("%H:%M:%S"),
    })
    assert response.status_code == 200
    assert "expires_at" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_the_api_key_pages_never_show_the_digest(admin_client, user):
    api_key = api_key_create(user=user, name="laptop").api_key
    for url in (reverse("admin:accounts_apikey_changelist"),
                reverse("admin:accounts_apikey_change", args=[api_key.pk])):
        response = admin_client.get(url)
        assert api_key.prefix in response.text
        assert api_key.digest not in response.text


def test_prefix_digest_and_owner_cannot_be_changed_through_the_change_form(
    admin_client, user, make_user
):
    api_key = api_key_create(user=user, name="old").api_key
    response = admin_client.post(reverse("admin:accounts_apikey_change", args=[api_key.pk]), {
        "name": "new", "prefix": "sk-br-forged000000", "digest": "0" * 64,
        "user": make_user().pk,
    })
    assert response.status_code == 302
    changed = ApiKey.objects.get(pk=api_key.pk)
    assert changed.name == "new"
    assert (changed.prefix, changed.digest, changed.user) == (
        api_key.prefix, api_key.digest, user
    )


def test_the_revoke_action_revokes_only_the_selected_keys(admin_client, user):
    chosen = api_key_create(user=user, name="chosen").api_key
    spared = api_key_create(user=user, name="spared").api_key
    response = admin_client.post(reverse("admin:accounts_apikey_changelist"), {
        "action": "revoke_keys", "_selected_action": [chosen.pk], "index": 0,
    }, follow=True)
    assert "Revoked 1 API key." in _messages(response)
    chosen.refresh_from_db()
    spared.refresh_from_db()
    assert chosen.revoked_at is not None
    assert spared.revoked_at is None


def test_revoking_a_revoked_key_again_keeps_its_first_revocation_time(admin_client, user):
    api_key = api_key_create(user=user).api_key
    url = reverse("admin:accounts_apikey_changelist")
    admin_client.post(url, {"action": "revoke_keys", "_selected_action": [api_key.pk]})
    api_key.refresh_from_db()
    first = api_key.revoked_at
    admin_client.post(url, {"action": "revoke_keys", "_selected_action": [api_key.pk]})
    api_key.refresh_from_db()
    assert api_key.revoked_at == first


@pytest.mark.parametrize("name", ["accounts_user_changelist", "accounts_apikey_changelist",
                                  "accounts_apikey_add"])
def test_non_staff_users_are_redirected_to_the_admin_login(client, user, name):
    client.force_login(user)
    url = reverse(f"admin:{name}")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_set_a_keys_policies_and_bad_networks_are_refused(admin_client, make_user):
    from accounts.services import api_key_create

    key = api_key_create(user=make_user(), name="k").api_key
    url = f"/admin/accounts/apikey/{key.pk}/change/"
    form = {"name": "k", "expires_at_0": "", "expires_at_1": "", "rpm": "30", "tpm": "",
            "max_concurrency": "2", "allowed_models": '["mock-gpt"]',
            "allowed_ips": '["10.0.0.300/8"]'}
    refused = admin_client.post(url, form)
    assert refused.status_code == 200
    assert "not an IP network in CIDR form" in refused.content.decode()
    key.refresh_from_db()
    assert key.rpm is None

    saved = admin_client.post(url, {**form, "allowed_ips": '["192.168.1.7/24"]'})
    assert saved.status_code == 302
    key.refresh_from_db()
    assert (key.rpm, key.max_concurrency, key.allowed_models, key.allowed_ips) == (
        30, 2, ["mock-gpt"], ["192.168.1.0/24"])
