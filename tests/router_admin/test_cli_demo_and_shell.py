"""``manage.py router``: the demo seed, the command line itself, and key policies given on
it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import ApiKey, User
from accounts.selectors import api_key_authenticate
from accounts.services import api_key_create
from billing.models import LedgerEntry, ModelPrice
from billing.selectors import price_current
from tests.router_admin.cli import manage, micros, refused, router, row_counts

# --- demo --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_demo_seeds_everything_the_embedded_default_needs(settings):
    settings.DEBUG = True

    lines = router("demo")

    admin = User.objects.get(email="admin@example.com")
    assert admin.is_staff
    assert admin.is_superuser
    assert admin.check_password("admin")
    assert "Admin: admin@example.com / password admin (created)" in lines
    demo_user = User.objects.get(email="demo@example.com")
    assert micros(demo_user) == 10_000_000
    assert demo_user.check_password("demo")
    assert not demo_user.is_staff
    assert any(line.startswith("Portal: http://127.0.0.1:8000/ (sign in as demo@example.com")
               for line in lines)
    price = price_current(model="mock-gpt")
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == (Decimal("0.5"),
                                                                     Decimal("1.5"))
    assert price.max_output_tokens == 4096
    secret = next(line.rsplit(" ", 1)[1] for line in lines if line.startswith("Demo API key"))
    assert api_key_authenticate(raw_key=secret).user == demo_user
    output = "\n".join(lines)
    assert "curl http://127.0.0.1:8000/v1/chat/completions" in output
    assert f"Authorization: Bearer {secret}" in output
    assert '"model": "mock-gpt"' in output


@pytest.mark.django_db
def test_demo_twice_credits_once_and_leaves_one_working_demo_key():
    first = router("demo", "--force")
    admin = User.objects.get(email="admin@example.com")
    admin.set_password("changed-by-staff")
    admin.save()

    second = router("demo", "--force", "--base-url", "http://localhost:9000/")

    demo_user = User.objects.get(email="demo@example.com")
    assert micros(demo_user) == 10_000_000
    assert LedgerEntry.objects.count() == 1
    assert User.objects.count() == 2
    # mock-gpt, and mock-embed for the embeddings endpoint: once each.
    assert sorted(ModelPrice.objects.values_list("model", flat=True)) == ["mock-embed",
                                                                          "mock-gpt"]
    assert ApiKey.objects.filter(user=demo_user).count() == 2
    active = ApiKey.objects.get(user=demo_user, revoked_at__isnull=True)
    first_secret, second_secret = (
        next(line.rsplit(" ", 1)[1] for line in lines if line.startswith("Demo API key"))
        for lines in (first, second))
    assert api_key_authenticate(raw_key=second_secret) == active
    assert api_key_authenticate(raw_key=first_secret) is None
    assert "Demo API key (new, shown once; the one before is revoked): " in "\n".join(second)
    assert first != second
    assert "Admin: admin@example.com (exists; password unchanged)" in second
    assert User.objects.get(email="admin@example.com").check_password("changed-by-staff")
    assert any("curl http://localhost:9000/v1/chat/completions" in line for line in second)


@pytest.mark.django_db
def test_demo_revokes_only_its_own_earlier_keys():
    router("demo", "--force")
    demo_user = User.objects.get(email="demo@example.com")
    own = api_key_create(user=demo_user, name="my script")

    router("demo", "--force")

    assert set(ApiKey.objects.filter(user=demo_user, revoked_at__isnull=True)
               .values_list("name", flat=True)) == {"demo", "my script"}
    assert api_key_authenticate(raw_key=own.secret) is not None


@pytest.mark.django_db
def test_demo_keeps_a_price_staff_already_set():
    router("price", "set", "mock-gpt", "--input", "2", "--output", "3")

    router("demo", "--force")

    assert ModelPrice.objects.get(model="mock-gpt").input_usd_per_mtok == Decimal("2")


@pytest.mark.django_db
def test_demo_refuses_without_debug_unless_forced(settings):
    settings.DEBUG = False

    refused("demo", match="only runs with DEBUG on")


# --- the command itself ------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("args", [(), ("user",), ("key",), ("price",), ("frobnicate",)])
def test_an_incomplete_or_unknown_command_is_refused(args):
    refused(*args, match="Error:")


@pytest.mark.django_db(transaction=True)
def test_bad_input_exits_non_zero_with_one_line_on_stderr(user):
    before = row_counts()

    result = manage("credit", user.email, "1.0000001", "--reason", "typo")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "CommandError: 1.0000001 USD is finer than one micro-USD (6 decimal places)."
    ]
    assert row_counts() == before


@pytest.mark.django_db(transaction=True)
def test_key_create_from_the_shell_ends_with_the_secret(user):
    result = manage("key", "create", user.email)

    assert result.returncode == 0, result.stderr
    assert api_key_authenticate(raw_key=result.stdout.splitlines()[-1]).user == user


def test_key_create_sets_the_keys_policies(make_user):
    user = make_user()
    router("key", "create", user.email, "--rpm", "60", "--tpm", "9000", "--max-concurrency",
           "4", "--models", "gpt-4o-mini, mock-gpt", "--ips", "10.1.2.3/8,2001:db8::/32",
           "--expires", "2999-01-01")
    key = ApiKey.objects.get(user=user)
    assert (key.rpm, key.tpm, key.max_concurrency) == (60, 9000, 4)
    assert key.allowed_models == ["gpt-4o-mini", "mock-gpt"]
    assert key.allowed_ips == ["10.0.0.0/8", "2001:db8::/32"]
    assert key.expires_at.year == 2999


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--ips", "10.0.0.300/8"], "not an IP network in CIDR form"),
        (["--rpm", "0"], "positive whole number"),
        (["--expires", "next tuesday"], "not an ISO date"),
        (["--expires", "2001-01-01"], "cannot expire in the past"),
    ],
)
def test_key_create_refuses_bad_policies_and_writes_nothing(make_user, flags, match):
    user = make_user()
    refused("key", "create", user.email, *flags, match=match)

