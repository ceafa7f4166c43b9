"""Usage records and holds become tables partitioned by month of ``created_at``
(PostgreSQL's native ``PARTITION BY RANGE``); SQLite keeps its plain tables.

Why: every request adds one row to each, and these rows are request-level detail that a
retention policy drops a month at a time (``billing.services.retention``): dropping a
partition is instant and leaves nothing for vacuum, where ``DELETE`` of a month would rewrite
and bloat the table and its indexes. Each month's indexes also stay small and hot.

What changes in the database, and not in Django's model state:

- The primary key becomes ``(id, created_at)``: PostgreSQL only enforces a unique key on a
  partitioned table when it contains the partition key. Django still treats ``id`` as the
  primary key. Ids stay unique because of where they come from: a usage record's from its
  identity sequence (kept), a hold's is the request id, ``req_`` + a random UUID, made by the
  router; the request path also inserts a hold with its creation time fixed before the first
  try, so a retried reservation still hits its own hold's key.
- Every UNIQUE constraint or index without ``created_at`` gets it appended; what guards the
  old rule instead: ``billing_usagerecord.request_id`` is written once per hold, by the
  settle that moves that hold from pending under its row lock (hot path and ORM alike), and
  the ledger's UNIQUE ``idempotency_key`` (``charge:<request id>``) still refuses a second
  charge of one request whatever happens to the usage table.
- ``billing_ledgerentry.hold_id`` no longer has a foreign key (first operation below): a
  foreign key to a partitioned table would need ``(hold_id, created_at)``, and the ledger is
  kept for ever while retention drops old hold partitions. No other table references holds
  or usage records; the conversion refuses to run if one does.
- Every other index, CHECK, NOT NULL, default, foreign key (to wallets, keys, prices, users,
  organizations) and trigger is recreated from the catalog as it stands when this runs, so
  the indexes 0020 added come along whatever they are; names are kept.

Partitions: one per UTC month from the month of the oldest row (the current month on an
empty table) to three months ahead, and a DEFAULT partition so that no insert can ever fail
for want of one. ``billing.services.partitions`` (Celery beat, ``router partitions``) keeps
creating the months ahead.

Time on an existing database: the rows are copied with one ``INSERT ... SELECT`` per table
inside this migration's transaction, under an ACCESS EXCLUSIVE lock (requests wait, or
fail their reservation once ``ROUTER_DB_WAIT_MS`` passes): expect roughly a minute per few
million usage records on ordinary hardware, index builds included, and twice the tables'
disk space until the old ones are dropped at commit. With tens of millions of rows, run it
in a maintenance window (the router stopped), or migrate by hand beforehand: create the
partitioned table, copy month by month while the router runs, then copy the last rows and
swap names in a short window, and ``migrate --fake`` this migration.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import django.db.models.deletion
from django.db import migrations, models

TABLES = ("billing_hold", "billing_usagerecord")
# Months created ahead of the current one (the maintenance job keeps the same horizon).
MONTHS_AHEAD = 3

# The ledger's triggers (0002), which SQLite loses whenever Django remakes the ledger table
# (as the AlterField below does there): created again if missing.
SQLITE_LEDGER_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS billing_ledger_no_update BEFORE UPDATE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER IF NOT EXISTS billing_ledger_no_delete BEFORE DELETE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only: DELETE refused'); END;""",
]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _with_created_at(definition: str) -> str:
    """An index definition (``pg_get_indexdef``) with ``created_at`` appended to its key
    columns: the part in parentheses right after ``USING <method>``."""
    start = re.search(r" USING \w+ \(", definition)
    if start is None:
        raise ValueError(f"unexpected index definition: {definition}")
    depth, index = 1, start.end()
    while depth:
        depth += {"(": 1, ")": -1}.get(definition[index], 0)
        index += 1
    return definition[:index - 1] + ", created_at" + definition[index - 1:]


def _without_created_at(columns: list[str]) -> list[str]:
    return [column for column in columns if column != "created_at"] or columns


def _rows(cursor, sql: str, params: list | None = None) -> list[tuple]:
    cursor.execute(sql, params)
    return cursor.fetchall()


def _rebuild(cursor, table: str, *, partitioned: bool) -> None:
    """Replace ``table`` by a copy of itself, partitioned by month (or plain again when
    ``partitioned`` is false), with every row, index, constraint and trigger."""
    cursor.execute(f"LOCK TABLE {_q(table)} IN ACCESS EXCLUSIVE MODE")
    referencing = _rows(cursor, "SELECT conname, conrelid::regclass::text FROM pg_constraint "
                                "WHERE confrelid = %s::regclass AND contype = 'f'", [table])
    if referencing:
        raise RuntimeError(f"{table} is referenced by foreign keys {referencing}: a "
                           "partitioned table can only be referenced through its partition key")
    new = f"{table}_rebuilt"
    partition_by = " PARTITION BY RANGE (created_at)" if partitioned else ""
    cursor.execute(f"CREATE TABLE {_q(new)} (LIKE {_q(table)} INCLUDING DEFAULTS "
                   f"INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING STORAGE "
                   f"INCLUDING COMMENTS){partition_by}")
    renames: list[str] = []  # run once the old table is gone: back to the original names

    # Primary key and UNIQUE constraints: their index names are unique per schema, so they
    # are built under temporary names.
    keys = _rows(cursor, """
        SELECT c.conname, c.contype,
               array_agg(a.attname::text ORDER BY k.ord)
          FROM pg_constraint AS c
          CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u')
         GROUP BY c.conname, c.contype ORDER BY c.conname""", [table])
    for number, (name, kind, columns) in enumerate(keys):
        if partitioned and "created_at" not in columns:
            columns = [*columns, "created_at"]
        elif not partitioned:
            columns = _without_created_at(columns)
        temporary = f"{new}_key{number}"
        cursor.execute(f"ALTER TABLE {_q(new)} ADD CONSTRAINT {_q(temporary)} "
                       f"{'PRIMARY KEY' if kind == 'p' else 'UNIQUE'} "
                       f"({', '.join(_q(c) for c in columns)})")
        renames.append(f"ALTER TABLE {_q(table)} RENAME CONSTRAINT {_q(temporary)} "
                       f"TO {_q(name)}")

    indexes = _rows(cursor, """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisunique,
               EXISTS (SELECT 1 FROM unnest(i.indkey) AS k(attnum)
                         JOIN pg_attribute AS a
                           ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                        WHERE a.attname = 'created_at')
          FROM pg_index AS i
         WHERE i.indrelid = %s::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c
                            WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid
                              AND c.contype IN ('p', 'u', 'x'))
         ORDER BY 1""", [table])
    for number, (name, definition, unique, has_created_at) in enumerate(indexes):
        name = name.split(".")[-1].strip('"')
        match = re.match(r"CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+ (USING .*)$", definition,
                         re.DOTALL)
        if match is None:
            raise RuntimeError(f"unexpected index definition: {definition}")
        body = match.group(3)
        if partitioned and unique and not has_created_at:
            body = _with_created_at(" " + body)[1:]
        elif not partitioned and unique:
            body = body.replace(", created_at)", ")", 1)
        temporary = f"{new}_ix{number}"
        cursor.execute(f"CREATE {match.group(1) or ''}INDEX {_q(temporary)} ON {_q(new)} {body}")
        renames.append(f"ALTER INDEX {_q(temporary)} RENAME TO {_q(name)}")

    if partitioned:
        oldest = _rows(cursor, f"SELECT min(created_at) FROM {_q(table)}")[0][0]  # noqa: S608
        now = datetime.now(UTC)
        month = _month_start(min(oldest or now, now))
        last = _add_months(_month_start(now), MONTHS_AHEAD)
        while month <= last:
            following = _add_months(month, 1)
            cursor.execute(f"CREATE TABLE {_q(f'{table}_p{month:%Y_%m}')} PARTITION OF "
                           f"{_q(new)} FOR VALUES FROM (%s) TO (%s)", [month, following])
            month = following
        cursor.execute(f"CREATE TABLE {_q(f'{table}_default')} PARTITION OF {_q(new)} DEFAULT")

    columns = ", ".join(_q(row[0]) for row in _rows(cursor, """
        SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
           AND NOT attisdropped ORDER BY attnum""", [table]))
    # Names from the catalog, quoted: nothing here comes from outside.
    cursor.execute(f"INSERT INTO {_q(new)} ({columns}) "  # noqa: S608
                   f"SELECT {columns} FROM {_q(table)}")

    # Identity columns carry on from where the old sequence was (not from max(id): ids
    # handed out by transactions that rolled back are not given again). A serial column's
    # sequence moves to the new table, or it would be dropped with the old one.
    sequences = _rows(cursor, """
        SELECT attname, attidentity <> '' FROM pg_attribute
         WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
           AND pg_get_serial_sequence(%s, attname) IS NOT NULL""", [table, table])
    for column, identity in sequences:
        old_sequence = _rows(cursor, "SELECT pg_get_serial_sequence(%s, %s)",
                             [table, column])[0][0]
        if identity:
            last_value, is_called = _rows(
                cursor, f"SELECT last_value, is_called FROM {old_sequence}")[0]  # noqa: S608
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s, %s)",
                           [new, column, last_value, is_called])
        else:
            cursor.execute(f"ALTER SEQUENCE {old_sequence} OWNED BY {_q(new)}.{_q(column)}")

    # Foreign keys from this table, added after the copy: one check of all rows, instead of
    # a trigger per row (and a partitioned table takes no NOT VALID foreign key).
    for name, definition in _rows(cursor, """
            SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname""", [table]):
        cursor.execute(f"ALTER TABLE {_q(new)} ADD CONSTRAINT {_q(name)} {definition}")

    triggers = _rows(cursor, """
        SELECT pg_get_triggerdef(oid) FROM pg_trigger
         WHERE tgrelid = %s::regclass AND NOT tgisinternal""", [table])

    cursor.execute(f"DROP TABLE {_q(table)}")
    cursor.execute(f"ALTER TABLE {_q(new)} RENAME TO {_q(table)}")
    for column, identity in sequences:
        if identity:
            # The new identity's sequence was named after the temporary table.
            sequence = _rows(cursor, "SELECT pg_get_serial_sequence(%s, %s)", [table, column])
            cursor.execute(f"ALTER SEQUENCE {sequence[0][0]} "
                           f"RENAME TO {_q(f'{table}_{column}_seq')}")
    for statement in renames:
        cursor.execute(statement)
    for (definition,) in triggers:
        cursor.execute(re.sub(r" ON \S+ ", f" ON {_q(table)} ", definition, count=1))


def partition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            _rebuild(cursor, table, partitioned=True)


def unpartition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            _rebuild(cursor, table, partitioned=False)


def sqlite_ledger_triggers(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    for statement in SQLITE_LEDGER_TRIGGERS:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0020_scale_indexes")]

    operations = [
        # The ledger keeps a request's hold id without a foreign key (see LedgerEntry.hold).
        migrations.AlterField(
            model_name="ledgerentry",
            name="hold",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="entries", to="billing.hold"),
        ),
        migrations.RunPython(sqlite_ledger_triggers, migrations.RunPython.noop),
        migrations.RunPython(partition, unpartition),
    ]
