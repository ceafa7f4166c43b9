"""Retention of request-level detail: usage records and holds older than
``ROUTER_USAGE_RETENTION_MONTHS`` are dropped a whole month partition at a time.

What is kept for ever: the ledger (every charge, with its request id) and the usage
roll-ups (billing.models.UsageRollup), which the charts, reports and statements read. So a
month is dropped only once its daily roll-ups account for every one of its usage records
(same count, same total charged); and only when none of its holds is still pending (its money
is not settled yet). Otherwise the whole run is refused, saying which month and why.

With a policy of N months, the current month and the N before it are kept: on 2027-06-15
with N = 12, partitions ending on or before 2026-06-01 go. Rows in the DEFAULT partition are
never dropped here (partition maintenance moves them into their month first).

PostgreSQL only: on SQLite the tables are not partitioned, and retention refuses rather than
delete rows one by one (nothing is deleted there; keep the embedded database small by other
means, or move to PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.errors import BillingError
from billing.services.partitions import (
    PARTITIONED_TABLES,
    Partition,
    add_months,
    lock_for_ddl,
    month_start,
    partitioned,
    partitions_of,
)


class RetentionRefused(BillingError):
    """Nothing was dropped; the message says why."""


@dataclass(frozen=True)
class RetentionResult:
    cutoff: datetime  # partitions ending on or before this are (or would be) dropped
    dropped: list[str] = field(default_factory=list)
    dry_run: bool = False


def retention_cutoff(*, months: int, now: datetime | None = None) -> datetime:
    return add_months(month_start(now or timezone.now()), -months)


def retention_apply(*, months: int | None = None, dry_run: bool = False,
                    now: datetime | None = None) -> RetentionResult:
    """Drop (``dry_run``: only name) the usage-record and hold partitions older than the
    policy, ``months`` (default: ROUTER_USAGE_RETENTION_MONTHS). Raises RetentionRefused
    without dropping anything when there is no policy, on SQLite, or when a month is not
    fully rolled up or still has a pending hold."""
    months = settings.ROUTER_USAGE_RETENTION_MONTHS if months is None else months
    if months <= 0:
        raise RetentionRefused("No retention policy: ROUTER_USAGE_RETENTION_MONTHS is 0 "
                               "(keep everything), and no --months was given.")
    if connection.vendor != "postgresql":
        raise RetentionRefused("Retention drops monthly partitions, which exist on "
                               "PostgreSQL only; on SQLite nothing is deleted.")
    if not partitioned():
        raise RetentionRefused("The usage and hold tables are not partitioned yet: run "
                               "`manage.py migrate` first.")
    cutoff = retention_cutoff(months=months, now=now)
    with transaction.atomic():
        lock_for_ddl()
        expired = [p for table in PARTITIONED_TABLES for p in partitions_of(table)
                   if p.end is not None and p.end <= cutoff]
        problems = [problem for p in expired for problem in _why_not(p)]
        if problems:
            raise RetentionRefused("Nothing dropped: " + "; ".join(problems) + ".")
        if not dry_run:
            with connection.cursor() as cursor:
                # Deferred foreign-key checks of rows this transaction wrote (a caller's
                # own transaction) would stop the DROP: they are run now.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                for p in expired:
                    # DETACH takes the parent's ACCESS EXCLUSIVE lock for a moment (its
                    # CONCURRENTLY form is refused beside a DEFAULT partition); waiting
                    # longer than lock_for_ddl's timeout fails the run, not the requests.
                    cursor.execute(f'ALTER TABLE "{p.table}" DETACH PARTITION "{p.name}"')
                    cursor.execute(f'DROP TABLE "{p.name}"')
    return RetentionResult(cutoff=cutoff, dropped=[p.name for p in expired], dry_run=dry_run)


def _why_not(partition: Partition) -> list[str]:
    """Why this partition may not be dropped (nothing: it may)."""
    month = f"{partition.start:%Y-%m}"
    with connection.cursor() as cursor:
        if partition.table == "billing_hold":
            cursor.execute(f'SELECT count(*) FROM "{partition.name}" '  # noqa: S608
                           "WHERE status = 'pending'")
            pending = cursor.fetchone()[0]
            return [f"{month} has {pending} pending hold(s)"] if pending else []
        # Every usage record of the month is in its daily roll-ups: same count, same total.
        cursor.execute(f"""
            SELECT (SELECT count(*) FROM "{partition.name}"),
                   (SELECT coalesce(sum(cost_micros), 0) FROM "{partition.name}"),
                   coalesce(sum(requests), 0), coalesce(sum(cost_micros), 0)
              FROM billing_usagerollup
             WHERE period = 'day' AND bucket_start >= %s AND bucket_start < %s""",  # noqa: S608
                       [partition.start, partition.end])
        records, charged, rolled_up, rolled_up_charged = cursor.fetchone()
    if (records, charged) != (rolled_up, rolled_up_charged):
        return [f"{month} has {records} usage records charging {charged} µ$ but its daily "
                f"roll-ups count {rolled_up} charging {rolled_up_charged} µ$ (run the "
                "usage roll-up for that month first)"]
    return []
