"""Reads whose plans PostgreSQL would compile (JIT) for longer than they run.

JIT compiles a plan whose estimated cost passes ``jit_above_cost``; the estimates of the
pages' aggregates over CTEs and roll-ups pass it, and compiling took 8 to 900 ms where
the query itself ran in 5 to 40 ms (EXPLAIN ANALYZE at 10M usage records). Turned off per
transaction rather than per connection: a connection option is refused by pgbouncer,
which the README suggests in front of many instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def without_jit() -> Iterator[None]:
    """A transaction whose queries are planned without JIT (PostgreSQL; elsewhere just the
    transaction)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield
