"""``manage.py router`` commands that change money, prices, workers, API keys or users write
one audit row each, by the actor ``cli``, in the command's transaction."""

from __future__ import annotations

import pytest

from accounts.models import ApiKey, User
from audit.models import AuditEntry
from billing.models import LedgerEntry, ModelPrice, Voucher
from proxy.models import Worker
from tests.audit.helpers import assert_not_in_trail, only_entry
from tests.router_admin.cli import refused, router

pytestmark = pytest.mark.django_db

UPSTREAM_SECRET = "sk-upstream-CLI-PLAINTEXT-0123456789"


def _assert_by_cli(entry: AuditEntry) -> None:
    assert (entry.actor, entry.actor_label, entry.ip) == (None, "cli", None)


def test_worker_add_records_the_worker_by_cli_and_only_that_its_key_is_set():
    router("worker", "add", "up", "--kind", "openai", "--base-url", "https://up.example/v1",
           "--api-key", UPSTREAM_SECRET, "--models", "gpt-x,fast=gpt-x-mini")

    entry = only_entry(action="worker.create")
    _assert_by_cli(entry)
    worker = Worker.objects.get()
    assert (entry.object_type, entry.object_id, entry.object_label) == (
        "proxy.worker", str(worker.pk), "up (openai)")
    assert entry.after["api_key_encrypted"] == "set"
    assert entry.after["models"] == ["fast=gpt-x-mini", "gpt-x"]
    assert_not_in_trail(UPSTREAM_SECRET, worker.api_key_encrypted)


def test_worker_disable_and_enable_each_write_one_row_by_cli():
    router("worker", "add", "up", "--kind", "mock", "--models", "m")
    router("worker", "disable", "up")
    router("worker", "disable", "up")  # already disabled: nothing changes
    router("worker", "enable", "up")

    disabled, enabled = AuditEntry.objects.exclude(action="worker.create").order_by("id")
    for entry in (disabled, enabled):
        _assert_by_cli(entry)
    assert (disabled.action, disabled.before, disabled.after) == (
        "worker.disable", {"enabled": True}, {"enabled": False})
    assert (enabled.action, enabled.before, enabled.after) == (
        "worker.enable", {"enabled": False}, {"enabled": True})


def test_worker_drain_and_undrain_are_recorded():
    router("worker", "add", "up", "--kind", "mock", "--models", "m")
    router("worker", "drain", "up")
    router("worker", "undrain", "up")

    assert list(AuditEntry.objects.order_by("id").values_list("action", "after")) == [
        ("worker.create", AuditEntry.objects.get(action="worker.create").after),
        ("worker.drain", {"draining": True}),
        ("worker.undrain", {"draining": False}),
    ]


def test_price_set_records_the_new_version_against_the_one_in_force(price):
    router("price", "set", price.model, "--input", "3", "--output", "2")

    entry = only_entry(action="price.set")
    _assert_by_cli(entry)
    new = ModelPrice.objects.latest("effective_from")
    assert (entry.object_type, entry.object_id) == ("billing.modelprice", str(new.pk))
    assert entry.before["input_usd_per_mtok"] == "1"
    assert entry.after["input_usd_per_mtok"] == "3"
    assert "output_usd_per_mtok" not in entry.after  # unchanged


def test_the_first_price_of_a_model_is_recorded_whole():
    router("price", "set", "fresh", "--input", "0.5", "--output", "1.25")

    entry = only_entry(action="price.set")
    assert entry.before is None
    assert entry.after == {"model": "fresh", "input_usd_per_mtok": "0.5",
                           "output_usd_per_mtok": "1.25", "cached_input_usd_per_mtok": None,
                           "cache_write_usd_per_mtok": None, "kind": "chat",
                           "max_output_tokens": 4096, "context_length": None,
                           "effective_from": entry.after["effective_from"]}


def test_credit_records_the_balances_and_the_reason(user):
    router("credit", user.email, "10", "--reason", "invoice 42 paid by wire")

    entry = only_entry(action="wallet.credit")
    _assert_by_cli(entry)
    assert (entry.before, entry.reason) == ({"posted_micros": 0}, "invoice 42 paid by wire")
    assert entry.after == {"posted_micros": 10_000_000, "kind": "adjustment",
                           "amount_micros": 10_000_000,
                           "ledger_entry": LedgerEntry.objects.get().pk}


def test_user_create_with_staff_and_credit_records_the_user_and_the_credit():
    router("user", "create", "ops@example.com", "--staff", "--password", "pass phrase 123",
           "--credit", "5")

    created = only_entry(action="user.create")
    _assert_by_cli(created)
    user = User.objects.get(email="ops@example.com")
    assert (created.object_id, created.object_label) == (str(user.pk), "ops@example.com")
    assert (created.after["is_staff"], created.after["is_superuser"],
            created.after["password"]) == (True, False, "set")
    assert only_entry(action="wallet.credit").reason == "initial credit via CLI"
    assert_not_in_trail(user.password, "pass phrase 123")


def test_key_create_records_the_key_and_its_caps_but_not_its_secret(user):
    secret = router("key", "create", user.email, "--name", "ci", "--rpm", "60",
                    "--spend-limit", "20")[-1]

    api_key = ApiKey.objects.get()
    key_entry, caps_entry = only_entry(action="api_key.create"), only_entry(
        action="key_budget.set")
    for entry in (key_entry, caps_entry):
        _assert_by_cli(entry)
    assert (key_entry.after["rpm"], key_entry.after["digest"]) == (60, "set")
    assert caps_entry.after == {"lifetime_limit_micros": 20_000_000,
                                "monthly_limit_micros": None}
    assert_not_in_trail(secret, api_key.digest)


def test_key_revoke_records_the_revocation(user):
    router("key", "create", user.email)
    router("key", "revoke", ApiKey.objects.get().prefix)

    entry = only_entry(action="api_key.revoke")
    _assert_by_cli(entry)
    assert entry.before == {"revoked_at": None}


def test_voucher_create_records_the_batch_and_never_its_codes():
    codes = router("voucher", "create", "--amount", "5", "--count", "2", "--memo", "meetup")

    entry = only_entry(action="voucher.generate")
    _assert_by_cli(entry)
    assert (entry.after["count"], entry.after["amount_micros"], entry.reason) == (
        2, 5_000_000, "meetup")
    assert_not_in_trail(*codes, *Voucher.objects.values_list("code_digest", flat=True))


def test_a_command_refused_half_way_leaves_no_audit_row(user):
    # The key is created (and audited) first; the negative cap is refused after it, and the
    # command's transaction takes both back.
    refused("key", "create", user.email, "--spend-limit", "-1", match="negative")
    assert not ApiKey.objects.exists()
    assert not AuditEntry.objects.exists()


def test_a_staff_second_factor_reset_is_recorded_without_its_secret_or_codes(make_user):
    from accounts.two_factor.services import (
        authenticator_enrolment_confirm,
        authenticator_enrolment_start,
    )
    from tests.staff import authenticator_code

    ops = make_user(email="ops@example.com", is_staff=True)
    device = authenticator_enrolment_start(user=ops)
    enrolment = authenticator_enrolment_confirm(user=ops, code=authenticator_code(device))
    router("staff", "reset-2fa", "ops@example.com")

    entry = only_entry(action="user.second_factor_reset")
    _assert_by_cli(entry)
    assert entry.object_id == str(ops.pk)
    assert entry.before["authenticators"] == 1
    assert entry.after == {"authenticators": 0, "recovery_codes": 0}
    assert_not_in_trail(device.key, *enrolment.recovery_codes)
