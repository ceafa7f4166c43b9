"""The ids written on every request carry no ``LIKE 'prefix%'`` twin index (migration
0028): four index writes fewer per billed request, and nothing reads them."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from billing.services.partitions import partitions_ensure

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="PostgreSQL's varchar_pattern_ops indexes")

migration = importlib.import_module("billing.migrations.0028_drop_pattern_indexes")


def _twins() -> set[tuple[str, str]]:
    """(table, index) of every pattern index on the three ids, partitions' included."""
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT t.relname, c.relname FROM pg_index AS i
              JOIN pg_class AS c ON c.oid = i.indexrelid
              JOIN pg_class AS t ON t.oid = i.indrelid
              JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
              JOIN pg_opclass AS o ON o.oid = i.indclass[0]
             WHERE o.opcname = 'varchar_pattern_ops'
               AND (a.attname = 'id' AND t.relname ~ '^billing_hold(_p\\d+_\\d+|_default)?$'
                    OR a.attname = 'request_id'
                       AND t.relname ~ '^billing_usagerecord(_p\\d+_\\d+|_default)?$'
                    OR a.attname = 'idempotency_key' AND t.relname = 'billing_ledgerentry')""")
        return set(cursor.fetchall())


@pytest.mark.django_db
def test_no_id_written_per_request_has_a_pattern_index_nor_does_a_new_months_partition():
    assert _twins() == set()
    partitions_ensure(now=datetime(2031, 5, 1, tzinfo=UTC))
    assert _twins() == set()


@pytest.mark.django_db(transaction=True)
def test_the_migration_drops_them_on_every_partition_and_builds_them_again_backwards():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([("billing", "0027_usage_owner_rollup")])
        made = _twins()
        tables = {table for table, _ in made}
        assert {"billing_hold", "billing_usagerecord", "billing_ledgerentry"} <= tables
        assert any(table.startswith("billing_usagerecord_p") for table in tables)
        assert any(table.startswith("billing_hold_p") for table in tables)
        executor.loader.build_graph()
        executor.migrate([("billing", "0028_drop_pattern_indexes")])
        assert _twins() == set()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
