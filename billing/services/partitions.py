"""The monthly partitions of usage records and holds (PostgreSQL; billing migration 0021).

Each table has one partition per UTC month of ``created_at`` and a DEFAULT partition that
takes any row no month partition covers, so an insert never fails for want of one. This
module creates the months ahead before they begin (beat, daily; ``router partitions``), so
the DEFAULT partition stays empty; when rows did land there (maintenance stopped for months,
rows written with an old or future ``created_at``), their month's partition is created and
they move into it.

SQLite keeps plain tables: everything here does nothing there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

PARTITIONED_TABLES = ("billing_usagerecord", "billing_hold")
# Months created ahead of the current one: three missed daily runs in a row would still
# leave weeks before a row reached the DEFAULT partition.
MONTHS_AHEAD = 3
# How long DDL here waits for a table lock. Waiting longer would queue every request's
# statement on these tables behind this one; giving up only delays the work to the next run.
LOCK_TIMEOUT = "5s"
# Any number taken by nothing else: one maintenance or retention run at a time.
ADVISORY_LOCK = 7_400_121


@dataclass(frozen=True)
class Partition:
    table: str  # the partitioned table
    name: str
    start: datetime | None  # None: the DEFAULT partition
    end: datetime | None


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month:%Y_%m}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def partitioned() -> bool:
    """True where the tables are partitioned: PostgreSQL past migration 0021."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_partitioned_table "
                       "WHERE partrelid = ANY(%s::regclass[])", [list(PARTITIONED_TABLES)])
        return cursor.fetchone()[0] == len(PARTITIONED_TABLES)


_BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def partitions_of(table: str) -> list[Partition]:
    """The table's partitions, months in order, then DEFAULT."""
    with connection.cursor() as cursor:
        # Bounds are printed in the session's time zone, with its offset: read either way.
        cursor.execute("""
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
              FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
             WHERE i.inhparent = %s::regclass""", [table])
        found = []
        for name, bound in cursor.fetchall():
            match = _BOUNDS.search(bound)
            if match is None:
                found.append(Partition(table, name, None, None))
            else:
                found.append(Partition(table, name,
                                       datetime.fromisoformat(match.group(1)).astimezone(UTC),
                                       datetime.fromisoformat(match.group(2)).astimezone(UTC)))
    return sorted(found, key=lambda p: (p.start is None, p.start or datetime.min.replace(
        tzinfo=UTC)))


def lock_for_ddl() -> None:
    """Inside a transaction: one run at a time, and no long wait for a table lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")


def partitions_ensure(*, now: datetime | None = None,
                      months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the partitions of the current month and ``months_ahead`` after it, and of any
    month whose rows sit in the DEFAULT partition (moving them). Idempotent; returns the
    partitions created. Nothing on SQLite."""
    if not partitioned():
        return []
    first = month_start(now or timezone.now())
    created = []
    with transaction.atomic():
        lock_for_ddl()
        for table in PARTITIONED_TABLES:
            covered = {p.start for p in partitions_of(table) if p.start is not None}
            wanted = {add_months(first, n) for n in range(months_ahead + 1)}
            wanted |= _months_in_default(table)
            for month in sorted(wanted - covered):
                _create_month(table, month)
                created.append(partition_name(table, month))
    return created


def _months_in_default(table: str) -> set[datetime]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') "  # noqa: S608
                       f"FROM {_q(table + '_default')}")
        return {month.replace(tzinfo=UTC) for (month,) in cursor.fetchall()}


def _create_month(table: str, month: datetime) -> None:
    name, default = partition_name(table, month), f"{table}_default"
    bounds = [month, add_months(month, 1)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {_q(default)} "  # noqa: S608
                       f"WHERE created_at >= %s AND created_at < %s)", bounds)
        if not cursor.fetchone()[0]:
            # PostgreSQL checks the DEFAULT partition again under its own lock: a row that
            # arrived since fails this statement (and this run), it is not lost.
            cursor.execute(f"CREATE TABLE {_q(name)} PARTITION OF {_q(table)} "
                           f"FOR VALUES FROM (%s) TO (%s)", bounds)
            return
        # Rows of this month wait in DEFAULT. Writers are held off the whole table while they
        # move (SHARE ROW EXCLUSIVE conflicts with every INSERT, UPDATE and DELETE, not with
        # reads): a settle that found a hold in DEFAULT must not see it vanish before the
        # new partition holding it is attached. A statement that waited sees the new
        # partition once this commits.
        cursor.execute(f"LOCK TABLE {_q(table)} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"CREATE TABLE {_q(name)} (LIKE {_q(table)} INCLUDING DEFAULTS "
                       f"INCLUDING CONSTRAINTS)")
        # The new table has the parent's columns in the parent's order, as DEFAULT has.
        cursor.execute(f"WITH moved AS (DELETE FROM {_q(default)} "  # noqa: S608
                       f"WHERE created_at >= %s AND created_at < %s RETURNING *) "
                       f"INSERT INTO {_q(name)} SELECT * FROM moved", bounds)
        # Attaching builds the parent's indexes and foreign keys on it and checks its rows.
        cursor.execute(f"ALTER TABLE {_q(table)} ATTACH PARTITION {_q(name)} "
                       f"FOR VALUES FROM (%s) TO (%s)", bounds)
