"""Every change staff make in the admin to money, prices, workers, API keys and users writes
exactly one audit row: who, from where, what, before and after, and the reason asked for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_create, management_token_create
from audit.models import AuditEntry
from billing.models import KeyBudget, LedgerEntry, Voucher, Wallet
from billing.services import wallet_credit
from billing.services.vouchers import voucher_batch_create, voucher_redeem
from proxy.models import Worker
from proxy.services import worker_create
from tests.audit.helpers import assert_not_in_trail, only_entry
from tests.proxy.workers_admin.helpers import NEW_SECRET, SECRET, change_data, form_data

STAFF_IP = "203.0.113.9"


@pytest.fixture
def post(admin_client):
    """POST to an admin page from the staff member's address, following the redirect."""
    def send(url: str, data: dict, **kwargs):
        return admin_client.post(url, data, REMOTE_ADDR=STAFF_IP, **kwargs)
    return send


def _assert_by_staff(entry: AuditEntry, staff: User) -> None:
    assert (entry.actor, entry.actor_label, entry.ip) == (staff, staff.email, STAFF_IP)


def _funded(user: User, micros: int) -> Wallet:
    wallet_credit(user=user, amount_micros=micros, idempotency_key=f"fund:{user.pk}", memo="")
    return Wallet.objects.get(user=user)


def _credit(post, wallets: list[Wallet], **data):
    return post(reverse("admin:billing_wallet_changelist"), {
        "action": "credit_wallets", "_selected_action": [w.pk for w in wallets],
        "apply": "yes", "operation_id": "6f1c2b9e-1d7a-4c55-9b7e-0f6a3e1d2c44",
        "kind": "adjustment", **data}, follow=True)


# Money


def test_a_staff_credit_records_the_balance_before_and_after_and_the_reason(post, staff,
                                                                             user):
    wallet = _funded(user, 1_000_000)
    _credit(post, [wallet], amount_usd="2.5", reason="goodwill for the outage")
    _credit(post, [wallet], amount_usd="2.5", reason="goodwill for the outage")  # resubmitted

    entry = only_entry(action="wallet.credit")
    _assert_by_staff(entry, staff)
    ledger = LedgerEntry.objects.get(kind="adjustment", amount_micros=2_500_000)
    assert (entry.object_type, entry.object_id, entry.object_label) == (
        "billing.wallet", str(wallet.pk), f"wallet of {user.email}")
    assert entry.before == {"posted_micros": 1_000_000}
    assert entry.after == {"posted_micros": 3_500_000, "kind": "adjustment",
                           "amount_micros": 2_500_000, "ledger_entry": ledger.pk}
    assert entry.reason == "goodwill for the outage"


def test_a_credit_refused_for_one_wallet_leaves_no_row_for_any(post, make_user):
    rich, poor = _funded(make_user(), 5_000_000), _funded(make_user(), 1_000_000)
    response = _credit(post, [rich, poor], amount_usd="-2", reason="clawback")

    assert "the available balance is $1.000000" in response.text
    assert not LedgerEntry.objects.filter(amount_micros__lt=0).exists()
    assert not AuditEntry.objects.exists()


def test_generating_vouchers_records_the_batch_once_and_never_its_codes(post, staff):
    response = post(reverse("admin:billing_voucher_generate"), {
        "amount": "2.50", "count": "3", "memo": "spring campaign", "expires_at": ""})
    codes = response.context["codes"]
    assert len(codes) == 3

    entry = only_entry(action="voucher.generate")
    _assert_by_staff(entry, staff)
    batch = Voucher.objects.values_list("batch", flat=True).distinct().get()
    assert (entry.object_type, entry.object_id) == ("billing.voucher", str(batch))
    assert entry.before is None
    assert entry.after == {"batch": str(batch), "count": 3, "amount_micros": 2_500_000,
                           "memo": "spring campaign", "expires_at": None}
    assert entry.reason == "spring campaign"
    assert_not_in_trail(*codes, *Voucher.objects.values_list("code_digest", flat=True))


def test_voiding_vouchers_records_each_unused_one_and_not_the_redeemed(post, staff, user):
    codes = voucher_batch_create(amount_micros=1_000_000, count=2)
    voucher_redeem(user=user, code=codes[0])
    post(reverse("admin:billing_voucher_changelist"), {
        "action": "expire_now", "_selected_action": list(
            Voucher.objects.values_list("pk", flat=True))}, follow=True)

    unused = Voucher.objects.get(redeemed_at__isnull=True)
    entry = only_entry(action="voucher.void")
    _assert_by_staff(entry, staff)
    assert (entry.object_type, entry.object_id) == ("billing.voucher", str(unused.pk))
    assert entry.before == {"expires_at": None}
    assert entry.after == {"expires_at": unused.expires_at.isoformat()}


# Prices


def test_a_new_price_version_is_recorded_against_the_one_it_replaces(post, staff, price):
    later = timezone.now() + timedelta(hours=1)
    post(reverse("admin:billing_modelprice_add"), {
        "model": price.model, "input_usd_per_mtok": "1.5", "output_usd_per_mtok": "2",
        "cached_input_usd_per_mtok": "", "cache_write_usd_per_mtok": "", "kind": "chat",
        "max_output_tokens": 1000,
        "effective_from_0": later.strftime("%Y-%m-%d"),
        "effective_from_1": later.strftime("%H:%M:%S")})

    entry = only_entry(action="price.set")
    _assert_by_staff(entry, staff)
    assert entry.object_type == "billing.modelprice"
    assert entry.object_label.startswith("test-model: $1.5")
    # The output price and the cap did not change: only what did is shown.
    assert entry.before == {"input_usd_per_mtok": "1",
                            "effective_from": price.effective_from.isoformat()}
    assert entry.after["input_usd_per_mtok"] == "1.5"
    assert set(entry.after) == {"input_usd_per_mtok", "effective_from"}


# Workers


def test_adding_a_worker_records_its_settings_and_models_and_only_that_a_key_is_set(post,
                                                                                    staff):
    post(reverse("admin:proxy_worker_add"),
         form_data(name="fresh", api_key=SECRET, models=[("gpt-x", ""), ("fast", "mini")]))

    entry = only_entry(action="worker.create")
    _assert_by_staff(entry, staff)
    worker = Worker.objects.get(name="fresh")
    assert (entry.object_type, entry.object_id) == ("proxy.worker", str(worker.pk))
    assert entry.before is None
    assert entry.after["api_key_encrypted"] == "set"
    assert entry.after["models"] == ["fast=mini", "gpt-x"]
    assert entry.after["base_url"] == "https://api.example.com/v1"
    assert_not_in_trail(SECRET, worker.api_key_encrypted)


def test_a_workers_new_key_is_recorded_as_changed_and_never_shown(post, staff):
    worker = worker_create(name="up", kind="openai", base_url="https://up.example/v1",
                           api_key=SECRET, models=[("gpt-x", "")])
    old_cipher = worker.api_key_encrypted
    response = post(reverse("admin:proxy_worker_change", args=[worker.pk]),
                    change_data(worker, api_key=NEW_SECRET, priority="5",
                                models=[("gpt-x", ""), ("extra", "")]))
    assert response.status_code == 302

    entry = only_entry(action="worker.change")
    _assert_by_staff(entry, staff)
    assert entry.before == {"api_key_encrypted": "set", "priority": 0, "models": ["gpt-x"]}
    assert entry.after == {"api_key_encrypted": "changed", "priority": 5,
                           "models": ["extra", "gpt-x"]}
    worker.refresh_from_db()
    assert_not_in_trail(SECRET, NEW_SECRET, old_cipher, worker.api_key_encrypted)


def test_saving_a_worker_unchanged_writes_no_row(post):
    worker = worker_create(name="up", kind="mock", models=[("m", "")])
    post(reverse("admin:proxy_worker_change", args=[worker.pk]),
         change_data(worker, kind="mock", base_url=""))
    assert not AuditEntry.objects.exists()


def test_the_disable_and_enable_actions_record_each_worker_that_changed(post, staff):
    worker_create(name="a", kind="mock", models=[("m", "")])
    worker_create(name="b", kind="mock", models=[("m", "")], enabled=False)
    url = reverse("admin:proxy_worker_changelist")
    every = list(Worker.objects.values_list("pk", flat=True))
    post(url, {"action": "disable_workers", "_selected_action": every})

    entry = only_entry()
    _assert_by_staff(entry, staff)
    assert (entry.action, entry.object_label, entry.before, entry.after) == (
        "worker.disable", "a (mock)", {"enabled": True}, {"enabled": False})


def test_deleting_a_worker_records_what_it_was(post, staff):
    worker = worker_create(name="gone", kind="mock", models=[("m", "")])
    post(reverse("admin:proxy_worker_delete", args=[worker.pk]), {"post": "yes"})

    entry = only_entry(action="worker.delete")
    _assert_by_staff(entry, staff)
    assert (entry.object_id, entry.after) == (str(worker.pk), None)
    assert entry.before["name"] == "gone"
    assert not Worker.objects.exists()


# API keys and their limits


def test_creating_an_api_key_records_it_without_its_secret_or_digest(post, staff, user):
    response = post(reverse("admin:accounts_apikey_add"), {"user": user.pk, "name": "ci"})
    secret = response.context["secret"]

    entry = only_entry(action="api_key.create")
    _assert_by_staff(entry, staff)
    api_key = ApiKey.objects.get()
    assert entry.after["digest"] == "set"
    assert (entry.after["name"], entry.after["user"], entry.after["prefix"]) == (
        "ci", user.pk, api_key.prefix)
    assert_not_in_trail(secret, api_key.digest)


def test_changing_an_api_keys_limits_records_only_what_changed(post, staff, user):
    api_key = api_key_create(user=user, name="k").api_key
    response = post(reverse("admin:accounts_apikey_change", args=[api_key.pk]), {
        "name": "k", "expires_at_0": "", "expires_at_1": "", "rpm": "30", "tpm": "",
        "max_concurrency": "2", "allowed_models": '["mock-gpt"]', "allowed_ips": "[]"})
    assert response.status_code == 302

    entry = only_entry(action="api_key.change")
    _assert_by_staff(entry, staff)
    assert (entry.object_type, entry.object_id) == ("accounts.apikey", str(api_key.pk))
    assert entry.before == {"rpm": None, "max_concurrency": None, "allowed_models": []}
    assert entry.after == {"rpm": 30, "max_concurrency": 2, "allowed_models": ["mock-gpt"]}


def test_setting_a_keys_spend_caps_records_them(post, staff, user):
    api_key = api_key_create(user=user, name="k").api_key
    post(reverse("admin:billing_keybudget_add"), {
        "api_key": api_key.pk, "lifetime_limit_micros": "5000000",
        "monthly_limit_micros": ""})
    budget = KeyBudget.objects.get()
    post(reverse("admin:billing_keybudget_change", args=[budget.pk]), {
        "api_key": api_key.pk, "lifetime_limit_micros": "5000000",
        "monthly_limit_micros": "1000000"})

    created, changed = AuditEntry.objects.order_by("id")
    _assert_by_staff(changed, staff)
    assert (created.action, created.before) == ("key_budget.create", None)
    assert created.after == {"api_key": api_key.pk, "lifetime_limit_micros": 5_000_000,
                             "monthly_limit_micros": None}
    assert (changed.action, changed.before, changed.after) == (
        "key_budget.change", {"monthly_limit_micros": None},
        {"monthly_limit_micros": 1_000_000})


def test_revoking_keys_records_each_revocation_once(post, staff, user):
    api_key = api_key_create(user=user).api_key
    for _ in range(2):
        post(reverse("admin:accounts_apikey_changelist"),
             {"action": "revoke_keys", "_selected_action": [api_key.pk]})

    entry = only_entry(action="api_key.revoke")
    _assert_by_staff(entry, staff)
    api_key.refresh_from_db()
    assert (entry.before, entry.after) == ({"revoked_at": None},
                                           {"revoked_at": api_key.revoked_at.isoformat()})


def test_revoking_a_users_management_token_records_it(post, staff, user):
    created = management_token_create(user=user, name="ci")
    post(reverse("admin:accounts_managementtoken_changelist"),
         {"action": "revoke_tokens", "_selected_action": [created.token.pk]})

    entry = only_entry(action="management_token.revoke")
    _assert_by_staff(entry, staff)
    assert_not_in_trail(created.secret, created.token.digest)


# Users


def test_making_a_user_staff_and_deactivating_them_records_both_flags(post, staff, user):
    response = post(reverse("admin:accounts_user_change", args=[user.pk]), {
        "email": user.email, "name": "", "is_staff": "on",
        "date_joined_0": "2024-01-02", "date_joined_1": "03:04:05"})
    assert response.status_code == 302

    entry = only_entry(action="user.change")
    _assert_by_staff(entry, staff)
    assert (entry.object_type, entry.object_id, entry.object_label) == (
        "accounts.user", str(user.pk), user.email)
    assert entry.before["is_staff"] is False
    assert entry.before["is_active"] is True
    assert entry.after["is_staff"] is True
    assert entry.after["is_active"] is False
    assert "password" not in entry.after  # unchanged


def test_adding_a_user_records_that_a_password_is_set_and_never_its_hash(post, staff):
    post(reverse("admin:accounts_user_add"), {
        "email": "new@example.com", "name": "", "usable_password": "true",
        "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"})

    entry = only_entry(action="user.create")
    _assert_by_staff(entry, staff)
    user = User.objects.get(email="new@example.com")
    assert (entry.after["password"], entry.after["is_staff"]) == ("set", False)
    assert_not_in_trail(user.password, "a long pass phrase 42")


def test_setting_a_users_password_records_that_it_changed_and_never_the_hash(post, staff,
                                                                           user):
    url = reverse("admin:auth_user_password_change", args=[user.pk])
    post(url, {"usable_password": "true", "password1": "another pass phrase 7",
               "password2": "another pass phrase 7"})

    entry = only_entry(action="user.password")
    _assert_by_staff(entry, staff)
    user.refresh_from_db()
    # The fixture's user is API-only: its unusable password counts as none.
    assert (entry.before, entry.after) == ({"password": "not set"}, {"password": "set"})
    assert_not_in_trail(user.password, "another pass phrase 7")


def test_deleting_a_staff_members_authenticator_in_the_admin_is_recorded(post, staff,
                                                                         make_user):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts.two_factor.services import (
        authenticator_enrolment_confirm,
        authenticator_enrolment_start,
    )
    from tests.staff import authenticator_code

    ops = make_user(email="ops@example.com", is_staff=True)
    device = authenticator_enrolment_start(user=ops)
    authenticator_enrolment_confirm(user=ops, code=authenticator_code(device))
    url = reverse("admin:otp_totp_totpdevice_delete", args=[device.pk])
    assert post(url, {"post": "yes"}).status_code == 302

    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    entry = only_entry(action="user.second_factor_delete")
    _assert_by_staff(entry, staff)
    assert (entry.object_id, entry.before["user"], entry.after) == (
        str(device.pk), "ops@example.com", None)
    assert_not_in_trail(device.key)
