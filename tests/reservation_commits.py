"""PostgreSQL made to take its time over a reservation's commit, or to refuse it: a deferred
constraint trigger on the wallet runs when a transaction that raised a wallet's pending
money commits (a reservation; a settle lowers it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

SLEEP = "PERFORM pg_sleep({seconds})"
REFUSE = "RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'"


@contextmanager
def at_reservation_commit(action: str) -> Iterator[None]:
    """Run ``action`` (PL/pgSQL) at each reservation's commit; dropped afterwards (the
    schema outlives the test)."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE FUNCTION test_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN {action}; RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER test_at_commit AFTER UPDATE ON billing_wallet
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
              WHEN (NEW.pending_micros > OLD.pending_micros)
              EXECUTE FUNCTION test_at_commit();
        """)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_at_commit ON billing_wallet;"
                           "DROP FUNCTION test_at_commit()")
