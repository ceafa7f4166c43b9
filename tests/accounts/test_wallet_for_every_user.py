"""Every user has a wallet from the moment the account exists, whichever way it was made;
migration 0004 gives one to the users made before that rule."""

from __future__ import annotations

import importlib
from io import StringIO

import pytest
from django.apps import apps as live_apps
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from accounts.models import User
from accounts.services import user_create
from audit.actors import Actor
from billing.models import LedgerEntry, Wallet
from billing.services import wallet_credit
from tests.router_admin.cli import router

PASSWORD = "a-long-enough-passphrase"

migration_0004 = importlib.import_module("accounts.migrations.0004_wallet_for_every_user")


def _wallet_of(email: str) -> Wallet:
    return Wallet.objects.get(user__email=email)


def test_the_service_creates_the_user_with_an_empty_wallet(db):
    user = user_create(email="service@example.com")
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (0, 0)


def test_when_the_wallet_cannot_be_made_the_user_is_not_made_either(db, monkeypatch):
    def refuse(*, user: User) -> Wallet:
        raise RuntimeError("the wallet insert failed")

    # One transaction: a user without a wallet never commits.
    monkeypatch.setattr("accounts.services.wallet_get_or_create", refuse)
    with pytest.raises(RuntimeError):
        user_create(email="half@example.com")
    assert not User.objects.filter(email="half@example.com").exists()


def test_signing_up_in_the_portal_creates_the_wallet(client, db):
    response = client.post(reverse("portal:signup"), {
        "email": "Portal.Person@Example.com", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302
    assert _wallet_of("portal.person@example.com").posted_micros == 0


@pytest.mark.parametrize("usable_password", ["true", "false"])
def test_the_admins_add_form_creates_the_wallet(admin_client, usable_password):
    password = PASSWORD if usable_password == "true" else ""
    response = admin_client.post(reverse("admin:accounts_user_add"), {
        "email": "Added@Example.com", "name": "Added", "usable_password": usable_password,
        "password1": password, "password2": password})
    assert response.status_code == 302
    assert _wallet_of("added@example.com").posted_micros == 0


def test_router_user_create_creates_the_wallet_even_without_credit(db):
    router("user", "create", "cli@example.com")
    wallet = _wallet_of("cli@example.com")
    assert wallet.posted_micros == 0
    assert not LedgerEntry.objects.filter(wallet=wallet).exists()


def test_router_user_create_with_credit_posts_it_to_the_one_wallet(db):
    router("user", "create", "cli-credit@example.com", "--credit", "2.5")
    assert Wallet.objects.filter(user__email="cli-credit@example.com").count() == 1
    assert _wallet_of("cli-credit@example.com").posted_micros == 2_500_000


def test_createsuperuser_creates_the_wallet(db, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", "--noinput", "--email", "root@example.com",
                 stdout=StringIO(), stderr=StringIO())
    assert User.objects.get(email="root@example.com").is_superuser
    assert _wallet_of("root@example.com").posted_micros == 0


def test_a_user_made_by_the_model_manager_directly_gets_a_wallet_too(db):
    user = User.objects.create_user("shell@example.com")
    assert Wallet.objects.filter(user=user).exists()


def _drop_wallets_of(users: list[User]) -> None:
    # The state before this change: users whose wallet was never made. Raw SQL, since the
    # signal would otherwise be the only way to make a user, and it makes the wallet.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_wallet WHERE user_id = ANY(%s)",
                       [[user.pk for user in users]])


def test_the_migration_creates_the_missing_wallets_and_leaves_the_others_alone(db):
    never_credited = [user_create(email=f"old{i}@example.com") for i in range(3)]
    credited = user_create(email="credited@example.com")
    wallet_credit(user=credited, amount_micros=7_000_000, idempotency_key="t", memo="",
                  actor=Actor.cli())
    _drop_wallets_of(never_credited)
    assert Wallet.objects.filter(user__in=never_credited).count() == 0

    class SchemaEditor:  # all the function uses of one
        pass

    editor = SchemaEditor()
    editor.connection = connection  # type: ignore[attr-defined]
    created = migration_0004.wallets_create_missing(live_apps, editor)

    assert created == 3
    assert sorted(Wallet.objects.filter(user__in=never_credited)
                  .values_list("posted_micros", "pending_micros")) == [(0, 0)] * 3
    assert Wallet.objects.get(user=credited).posted_micros == 7_000_000
    assert User.objects.filter(wallet__isnull=True).count() == 0
    # Run again: nothing left to do.
    assert migration_0004.wallets_create_missing(live_apps, editor) == 0


@pytest.mark.django_db(transaction=True)
def test_migrating_forward_from_0003_gives_every_user_a_wallet():
    users = [user_create(email=f"legacy{i}@example.com") for i in range(5)]
    _drop_wallets_of(users[:4])
    executor = MigrationExecutor(connection)
    target_0003 = [("accounts", "0003_management_token")]
    try:
        # Back to 0003 (0004 undoes as a no-op: the wallets stay), then forward again.
        executor.migrate(target_0003)
        assert Wallet.objects.filter(user__in=users).count() == 1
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert Wallet.objects.filter(user__in=users).count() == 5
    assert User.objects.filter(wallet__isnull=True).count() == 0
