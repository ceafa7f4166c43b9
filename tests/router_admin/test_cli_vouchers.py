"""``manage.py router voucher create``: codes printed once, one per line; bad input refused
with nothing written."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import Voucher
from billing.selectors import wallet_balance
from billing.services.vouchers import voucher_redeem
from billing.voucher_codes import code_digest
from tests.router_admin.cli import manage, router


@pytest.mark.django_db
def test_it_prints_one_code_per_line_and_stores_only_their_digests(user):
    codes = router("voucher", "create", "--amount", "2.50", "--count", "3", "--memo", "meetup",
                   "--expires", "2999-12-31")

    assert len(set(codes)) == 3
    vouchers = Voucher.objects.all()
    assert {v.code_digest for v in vouchers} == {code_digest(code) for code in codes}
    assert {(v.amount_micros, v.memo, v.expires_at.date().isoformat()) for v in vouchers} == {
        (2_500_000, "meetup", "2999-12-31")}
    voucher_redeem(user=user, code=codes[0])
    assert wallet_balance(user=user).available_micros == 2_500_000


@pytest.mark.django_db
@pytest.mark.parametrize(("flags", "match"), [
    (["--amount", "ten", "--count", "1"], "'ten' is not an amount of USD"),
    (["--amount", "0.0000001", "--count", "1"], "finer than one micro-USD"),
    (["--amount", "0", "--count", "1"], "between 0.010000 and 10000.000000 USD"),
    (["--amount", "10001", "--count", "1"], "between 0.010000 and 10000.000000 USD"),
    (["--amount", "5", "--count", "0"], "between 1 and 10,000 vouchers"),
    (["--amount", "5", "--count", "10001"], "between 1 and 10,000 vouchers"),
    (["--amount", "5", "--count", "many"], "invalid int value: 'many'"),
    (["--amount", "5", "--count", "1", "--expires", "soon"], "'soon' is not an ISO date"),
    (["--amount", "5", "--count", "1", "--expires", "2001-01-01"], "must be in the future"),
    (["--count", "1"], "the following arguments are required: --amount"),
])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(flags, match):
    stdout = StringIO()
    with pytest.raises(CommandError, match=match) as excinfo:
        call_command("router", "voucher", "create", *flags, stdout=stdout, stderr=StringIO())

    assert "\n" not in str(excinfo.value)
    assert stdout.getvalue() == ""
    assert not Voucher.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_from_the_shell_stdout_is_the_batch_and_nothing_else():
    result = manage("voucher", "create", "--amount", "10", "--count", "2")

    assert result.returncode == 0, result.stderr
    codes = result.stdout.splitlines()
    assert len(codes) == 2
    assert {code_digest(code) for code in codes} == set(
        Voucher.objects.values_list("code_digest", flat=True))
