"""``manage.py router``: users, money, keys and prices; every happy path, and bad input
that writes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import User
from accounts.selectors import api_key_authenticate
from accounts.services import api_key_create
from billing.models import LedgerEntry, ModelPrice
from billing.selectors import price_current
from tests.router_admin.cli import funded, micros, refused, router

# --- user create -------------------------------------------------------------------------

@pytest.mark.django_db
def test_user_create_makes_an_api_only_user_without_money():
    lines = router("user", "create", "Alice@Example.com")

    user = User.objects.get(email="alice@example.com")
    assert lines == [f"Created user alice@example.com (id {user.pk})."]
    assert not user.has_usable_password()
    assert not user.is_staff
    assert LedgerEntry.objects.count() == 0


@pytest.mark.django_db
def test_user_create_sets_the_password_and_staff_flag():
    router("user", "create", "ops@example.com", "--password", "s3cret-pass", "--staff")

    user = User.objects.get(email="ops@example.com")
    assert user.check_password("s3cret-pass")
    assert user.is_staff
    assert not user.is_superuser


@pytest.mark.django_db
def test_user_create_with_credit_posts_one_adjustment_keyed_by_the_user():
    lines = router("user", "create", "rich@example.com", "--credit", "12.5")

    user = User.objects.get(email="rich@example.com")
    assert micros(user) == 12_500_000
    assert lines[-1] == "Available balance: 12.500000 USD"
    entry = LedgerEntry.objects.get()
    assert entry.kind == LedgerEntry.Kind.ADJUSTMENT
    assert entry.memo == "initial credit via CLI"
    assert entry.idempotency_key == f"cli:user-create:{user.pk}"
    assert entry.balance_after_micros == 12_500_000


@pytest.mark.django_db
def test_user_create_refuses_an_existing_email_in_any_case(make_user):
    make_user("taken@example.com")
    refused("user", "create", "TAKEN@example.com", match="already exists")


@pytest.mark.django_db
def test_user_create_refuses_an_invalid_email():
    refused("user", "create", "not-an-email", match="not a valid email address")


@pytest.mark.django_db
@pytest.mark.parametrize(("amount", "match"), [
    ("abc", "not an amount of USD"),
    ("1.0000001", "finer than one micro-USD"),
    ("-1", "available balance is"),  # a new user has nothing to take away
    ("0", "cannot be zero"),
])
def test_user_create_with_bad_credit_creates_no_user(amount, match):
    refused("user", "create", "new@example.com", "--credit", amount, match=match)
    assert not User.objects.filter(email="new@example.com").exists()


# --- credit and balance ------------------------------------------------------------------

@pytest.mark.django_db
def test_credit_adds_money_and_prints_the_new_balance(user):
    lines = router("credit", user.email, "2.25", "--reason", "goodwill")

    assert micros(user) == 2_250_000
    assert lines[-1] == "Available balance: 2.250000 USD"
    entry = LedgerEntry.objects.get()
    assert (entry.kind, entry.memo) == (LedgerEntry.Kind.ADJUSTMENT, "goodwill")
    assert entry.idempotency_key.startswith("cli:")


@pytest.mark.django_db
def test_credit_twice_is_two_adjustments(user):
    router("credit", user.email, "1", "--reason", "first")
    router("credit", user.email, "1", "--reason", "second")

    assert micros(user) == 2_000_000
    assert LedgerEntry.objects.count() == 2


@pytest.mark.django_db
def test_a_negative_credit_takes_money_away(user):
    funded(user, 5_000_000)

    lines = router("credit", user.email, "-1.5", "--reason", "refund reversed")

    assert micros(user) == 3_500_000
    assert lines == [
        f"Posted -1.500000 USD to {user.email} (ledger entry {LedgerEntry.objects.first().pk}).",
        "Available balance: 3.500000 USD",
    ]


@pytest.mark.django_db
def test_a_negative_credit_cannot_overdraw(user):
    funded(user, 1_000_000)

    message = refused("credit", user.email, "-1.000001", "--reason", "x",
                      match="available balance is")

    assert "1.000000" in message
    assert micros(user) == 1_000_000


@pytest.mark.django_db
@pytest.mark.parametrize(("amount", "match"), [
    ("abc", "not an amount of USD"),
    ("1.0000001", "finer than one micro-USD"),
    ("0", "cannot be zero"),
])
def test_credit_refuses_a_malformed_amount(user, amount, match):
    refused("credit", user.email, amount, "--reason", "x", match=match)


@pytest.mark.django_db
def test_credit_refuses_an_unknown_email():
    refused("credit", "nobody@example.com", "1", "--reason", "x", match="No user has the email")


@pytest.mark.django_db
def test_credit_requires_a_reason(user):
    refused("credit", user.email, "1", match="--reason")


@pytest.mark.django_db
def test_balance_prints_the_available_balance_alone(user):
    funded(user, 12_500_000)

    assert router("balance", user.email) == ["12.500000"]


@pytest.mark.django_db
def test_balance_of_a_user_without_a_wallet_is_zero(user):
    assert router("balance", user.email) == ["0.000000"]


@pytest.mark.django_db
def test_balance_refuses_an_unknown_email():
    refused("balance", "nobody@example.com", match="No user has the email")


# --- keys --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_key_create_prints_a_working_secret_on_the_last_line(user):
    lines = router("key", "create", user.email, "--name", "laptop")

    api_key = api_key_authenticate(raw_key=lines[-1])
    assert api_key is not None
    assert api_key.user == user
    assert api_key.name == "laptop"
    # The secret appears once, and only on its own line.
    assert sum(lines[-1] in line for line in lines) == 1


@pytest.mark.django_db
def test_key_create_refuses_an_unknown_email():
    refused("key", "create", "nobody@example.com", match="No user has the email")


@pytest.mark.django_db
def test_key_revoke_stops_the_key_working(user):
    created = api_key_create(user=user)

    lines = router("key", "revoke", created.api_key.prefix)

    assert api_key_authenticate(raw_key=created.secret) is None
    assert lines[0].startswith(f"Revoked API key {created.api_key.prefix} of {user.email}")


@pytest.mark.django_db
def test_key_revoke_refuses_an_unknown_prefix(user):
    created = api_key_create(user=user)

    refused("key", "revoke", "sk-br-nosuchprefix", match="No API key has the prefix")
    assert api_key_authenticate(raw_key=created.secret) is not None


# --- prices ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_price_set_adds_a_price_version():
    router("price", "set", "gpt-x", "--input", "0.15", "--output", "0.6",
           "--cached-input", "0.075", "--max-output-tokens", "16384")

    price = price_current(model="gpt-x")
    assert price is not None
    assert price.input_usd_per_mtok == Decimal("0.15")
    assert price.output_usd_per_mtok == Decimal("0.6")
    assert price.cached_input_usd_per_mtok == Decimal("0.075")
    assert price.max_output_tokens == 16384


@pytest.mark.django_db
def test_price_set_keeps_the_earlier_version(price):
    router("price", "set", price.model, "--input", "3", "--output", "4")

    assert ModelPrice.objects.filter(model=price.model).count() == 2
    current = price_current(model=price.model)
    assert current.input_usd_per_mtok == Decimal("3")
    assert current.cached_input_usd_per_mtok is None
    assert current.max_output_tokens == price.max_output_tokens  # carried over


@pytest.mark.django_db
@pytest.mark.parametrize(("extra", "match"), [
    (["--input", "-1", "--output", "1"], "zero or more"),
    (["--input", "1", "--output", "abc"], "not a number"),
    (["--input", "1", "--output", "1", "--cached-input", "0.0000001"], "more than 6 decimals"),
    (["--input", "1", "--output", "1", "--max-output-tokens", "0"], "at least 1"),
    (["--input", "1", "--output", "1", "--max-output-tokens", "many"], "invalid int value"),
    (["--input", "1"], "--output"),
])
def test_price_set_refuses_bad_input(extra, match):
    refused("price", "set", "gpt-x", *extra, match=match)


