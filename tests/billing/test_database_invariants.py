"""The database itself refuses states the services would never write."""

import pytest
from django.db import IntegrityError, connection, transaction

from billing.models import LedgerEntry, Wallet
from billing.services import wallet_credit


@pytest.fixture
def entry(user):
    return wallet_credit(user=user, amount_micros=1_000, idempotency_key="e", memo="m")


def _sql(statement: str, params: list | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def test_updating_a_ledger_row_fails_at_the_database(entry):
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("UPDATE billing_ledgerentry SET amount_micros = 5 WHERE id = %s", [entry.pk])
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("UPDATE billing_ledgerentry SET memo = 'rewritten'")
    entry.refresh_from_db()
    assert (entry.amount_micros, entry.memo) == (1_000, "m")


def test_deleting_a_ledger_row_fails_at_the_database(entry):
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("DELETE FROM billing_ledgerentry WHERE id = %s", [entry.pk])
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.all().delete()
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_a_wallet_cannot_hold_more_than_it_has(entry):
    with pytest.raises(IntegrityError):
        _sql("UPDATE billing_wallet SET pending_micros = posted_micros + 1")
    with pytest.raises(IntegrityError):
        _sql("UPDATE billing_wallet SET pending_micros = -1")
    wallet = Wallet.objects.get()
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000, 0)


@pytest.mark.parametrize(
    ("kind", "amount"),
    [("charge", 5), ("topup", -5), ("voucher", -5), ("refund", 0), ("adjustment", 0)],
)
def test_a_ledger_entry_whose_sign_contradicts_its_kind_is_refused(entry, kind, amount):
    with pytest.raises(IntegrityError):
        _sql(
            "INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, "
            "balance_after_micros, idempotency_key, memo, created_at) "
            "VALUES (%s, %s, %s, 0, 'sign-test', '', now())",
            [entry.wallet_id, kind, amount],
        )


def test_an_idempotency_key_is_used_once_at_most(entry):
    with pytest.raises(IntegrityError):
        _sql(
            "INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, "
            "balance_after_micros, idempotency_key, memo, created_at) "
            "VALUES (%s, 'topup', 1, 1001, %s, '', now())",
            [entry.wallet_id, entry.idempotency_key],
        )
