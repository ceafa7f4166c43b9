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


def _usage_row(user, price, **fields) -> None:
    values = {"prompt_tokens": 10, "cached_tokens": 0, "cache_write_tokens": 0,
              "endpoint": "chat", **fields}
    _sql("INSERT INTO billing_usagerecord (request_id, user_id, model, worker, prompt_tokens,"
         " completion_tokens, cached_tokens, cache_write_tokens, endpoint, cost_micros,"
         " price_id, source, estimate_reason, over_cap, over_hold, status, created_at)"
         " VALUES (%s, %s, 'm', '', %s, 0, %s, %s, %s, 0, %s, 'provider', '', false, false,"
         " 'ok', now())",
         [f"r-{sorted(fields.items())}", user.pk, values["prompt_tokens"],
          values["cached_tokens"], values["cache_write_tokens"], values["endpoint"], price.pk])


def test_a_usage_record_keeps_cache_reads_and_writes_within_its_prompt(user, price):
    _usage_row(user, price, cached_tokens=6, cache_write_tokens=4)  # exactly the prompt
    with pytest.raises(IntegrityError, match="cached_within_prompt"):
        _usage_row(user, price, cached_tokens=6, cache_write_tokens=5)


def test_a_usage_record_names_a_known_endpoint(user, price):
    _usage_row(user, price, endpoint="messages")
    with pytest.raises(IntegrityError, match="endpoint_known"):
        _usage_row(user, price, endpoint="fax")


def test_a_price_is_for_a_known_kind_of_model(price):
    with pytest.raises(IntegrityError, match="kind_known"):
        _sql("UPDATE billing_modelprice SET kind = 'image' WHERE id = %s", [price.pk])
