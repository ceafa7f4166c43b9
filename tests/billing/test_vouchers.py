"""Vouchers: generated as digests only, redeemed once ever, even under concurrency."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection, models
from django.utils import timezone

from billing.errors import BillingError, InvalidAmount, VoucherInvalid
from billing.models import LedgerEntry, Voucher, Wallet
from billing.selectors import wallet_audit, wallet_balance
from billing.services.vouchers import voucher_batch_create, voucher_redeem, vouchers_expire
from billing.topup_limits import VOUCHER_BATCH_MAX, VOUCHER_MAX_MICROS
from billing.voucher_codes import ALPHABET, code_digest
from tests.concurrency import run_concurrently

CODE_RE = re.compile(rf"^BR(-[{ALPHABET}]{{4}}){{4}}$")
FIVE_USD = 5_000_000


def _one_code(**kwargs) -> str:
    return voucher_batch_create(amount_micros=kwargs.pop("amount_micros", FIVE_USD), count=1,
                                **kwargs)[0]


@pytest.mark.django_db
class TestGeneration:
    def test_a_batch_returns_count_distinct_readable_codes_worth_the_amount(self, staff):
        codes = voucher_batch_create(amount_micros=2_500_000, count=50, memo="launch",
                                     created_by=staff)

        assert len(set(codes)) == 50
        assert all(CODE_RE.match(code) for code in codes), codes[:3]
        vouchers = Voucher.objects.all()
        assert vouchers.count() == 50
        assert {(v.amount_micros, v.memo, v.created_by_id) for v in vouchers} == {
            (2_500_000, "launch", staff.pk)}
        assert len({v.batch for v in vouchers}) == 1
        assert {v.code_prefix for v in vouchers} == {code[:7] for code in codes}

    def test_only_digests_are_stored_never_the_codes(self, staff, user):
        codes = voucher_batch_create(amount_micros=FIVE_USD, count=5, memo="secret check",
                                     created_by=staff)
        voucher_redeem(user=user, code=codes[0])

        bodies = [code.replace("-", "") for code in codes]
        with connection.cursor() as cursor:
            for model in apps.get_models():
                text_columns = [f.column for f in model._meta.concrete_fields if isinstance(
                    f, models.CharField | models.TextField | models.JSONField)]
                for column in text_columns:
                    for needle in [*codes, *bodies, *(body[2:] for body in bodies)]:
                        cursor.execute(
                            f'SELECT count(*) FROM "{model._meta.db_table}" '
                            f'WHERE "{column}"::text ILIKE %s', [f"%{needle}%"])
                        assert cursor.fetchone()[0] == 0, (model, column)
        assert {v.code_digest for v in Voucher.objects.all()} == {code_digest(c) for c in codes}

    @pytest.mark.parametrize("amount_micros", [0, -1, 9_999, VOUCHER_MAX_MICROS + 1])
    def test_amounts_out_of_bounds_are_refused(self, amount_micros):
        with pytest.raises(InvalidAmount, match=r"between 0\.010000 and 10000\.000000 USD"):
            voucher_batch_create(amount_micros=amount_micros, count=1)
        assert not Voucher.objects.exists()

    @pytest.mark.parametrize("count", [0, -3, VOUCHER_BATCH_MAX + 1])
    def test_counts_out_of_bounds_are_refused(self, count):
        with pytest.raises(InvalidAmount, match="between 1 and 10,000 vouchers"):
            voucher_batch_create(amount_micros=FIVE_USD, count=count)
        assert not Voucher.objects.exists()

    def test_an_expiry_in_the_past_is_refused(self):
        with pytest.raises(BillingError, match="expiry must be in the future"):
            _one_code(expires_at=timezone.now() - timedelta(seconds=1))

    def test_the_largest_batch_is_written_in_one_go(self):
        codes = voucher_batch_create(amount_micros=VOUCHER_MAX_MICROS, count=VOUCHER_BATCH_MAX)
        assert len(set(codes)) == Voucher.objects.count() == VOUCHER_BATCH_MAX


@pytest.mark.django_db
class TestRedeem:
    def test_a_code_credits_its_amount_once_as_a_voucher_entry(self, user):
        code = _one_code()

        entry = voucher_redeem(user=user, code=code)

        voucher = Voucher.objects.get()
        assert (entry.kind, entry.amount_micros) == ("voucher", FIVE_USD)
        assert entry.idempotency_key == f"voucher:{voucher.pk}"
        assert voucher.redeemed_by == user
        assert voucher.redeemed_at is not None
        assert wallet_balance(user=user).available_micros == FIVE_USD
        with pytest.raises(VoucherInvalid):
            voucher_redeem(user=user, code=code)
        assert wallet_balance(user=user).available_micros == FIVE_USD
        assert LedgerEntry.objects.count() == 1

    @pytest.mark.parametrize("typed", [
        lambda c: c.lower(),
        lambda c: c.replace("-", " "),
        lambda c: f"  {c.replace('-', '')}\n",
        lambda c: c[3:],  # without "BR-"
        lambda c: " - ".join(c.split("-")).lower(),
    ])
    def test_case_spaces_and_dashes_do_not_matter(self, user, typed):
        code = _one_code()
        assert voucher_redeem(user=user, code=typed(code)).amount_micros == FIVE_USD

    @pytest.mark.parametrize("case", ["unknown", "used", "expired", "voided", "garbage"])
    def test_unknown_used_expired_and_malformed_codes_get_one_message_and_no_money(
        self, user, make_user, case
    ):
        code = _one_code()
        if case == "unknown":
            code = code[:-1] + ("Z" if code[-1] != "Z" else "Y")
        elif case == "used":
            voucher_redeem(user=make_user(), code=code)
        elif case == "expired":
            Voucher.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        elif case == "voided":
            assert vouchers_expire(voucher_ids=[Voucher.objects.get().pk]) == 1
        else:
            code = "BR-OOOO-1111-IIII-LLLL"
        entries_before = LedgerEntry.objects.count()

        with pytest.raises(VoucherInvalid) as excinfo:
            voucher_redeem(user=user, code=code)

        assert str(excinfo.value) == "This code is not valid, has expired or was already used."
        assert LedgerEntry.objects.count() == entries_before
        assert wallet_balance(user=user).available_micros == 0

    def test_a_code_still_valid_until_its_expiry_can_be_redeemed(self, user):
        code = _one_code(expires_at=timezone.now() + timedelta(minutes=5))
        assert voucher_redeem(user=user, code=code).amount_micros == FIVE_USD

    def test_expiring_a_batch_voids_only_the_unused_codes(self, user):
        used, unused = voucher_batch_create(amount_micros=FIVE_USD, count=2)
        voucher_redeem(user=user, code=used)

        assert vouchers_expire(voucher_ids=list(Voucher.objects.values_list("pk", flat=True))) == 1

        assert Voucher.objects.get(redeemed_at__isnull=False).expires_at is None
        with pytest.raises(VoucherInvalid):
            voucher_redeem(user=user, code=unused)


@pytest.mark.django_db(transaction=True)
class TestRedeemUnderConcurrency:
    def test_a_code_credits_once_under_20_concurrent_redemptions(self, user):
        code = _one_code()

        results = run_concurrently(lambda: voucher_redeem(user=user, code=code),
                                   [() for _ in range(20)])

        credited = [r for r in results if isinstance(r, LedgerEntry)]
        refused = [r for r in results if isinstance(r, VoucherInvalid)]
        assert (len(credited), len(refused)) == (1, 19), results
        assert LedgerEntry.objects.filter(kind="voucher").count() == 1
        wallet = Wallet.objects.get(user=user)
        assert wallet.posted_micros == FIVE_USD
        assert wallet_audit(wallet_id=wallet.pk).consistent

    def test_two_users_racing_for_one_code_one_wins(self, make_user):
        code = _one_code()
        racers = [make_user() for _ in range(2)]

        results = run_concurrently(lambda racer: voucher_redeem(user=racer, code=code),
                                   [(racer,) for racer in racers for _ in range(5)])

        winners = {r.wallet.user_id for r in results if isinstance(r, LedgerEntry)}
        assert len(winners) == 1
        assert sum(isinstance(r, VoucherInvalid) for r in results) == 9
        balances = sorted(wallet_balance(user=racer).available_micros for racer in racers)
        assert balances == [0, FIVE_USD]
        assert Voucher.objects.get().redeemed_by_id in winners

    def test_many_codes_redeemed_at_once_by_one_user_all_credit(self, user):
        codes = voucher_batch_create(amount_micros=1_000_000, count=10)

        results = run_concurrently(lambda code: voucher_redeem(user=user, code=code),
                                   [(code,) for code in codes])

        assert all(isinstance(r, LedgerEntry) for r in results), results
        assert wallet_balance(user=user).available_micros == 10_000_000
