"""Hourly and daily usage roll-ups, recomputed from the usage records a window at a time.

On PostgreSQL the database does the sums (``rollup_statements``): hours from the records,
days from the hours, a day per transaction, so a run costs the hours it recomputes and a
full rebuild of history runs in bounded memory. The embedded SQLite mode, whose histories
are small, sums through the ORM (``usage_rollup_in_python``, the reference).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from billing.models import UsageOwnerRollup, UsageRecord, UsageRollup, UsageRollupMark
from billing.services.open_transactions import oldest_open_transaction
from billing.services.rollup_statements import DAY_REFRESH_SQL, OWNER_REFRESH_SQL

# Any number taken by nothing else: with a day's number, the lock of that day's buckets on
# PostgreSQL.
_ADVISORY_LOCK = 7_400_101
# Days a rebuild of history sums at once, each on its own database connection.
PARALLEL_DAYS = 2
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
# How far behind the clock the mark stays at least: a record is stamped a moment before it is
# written (in Python, on SQLite).
LAG = timedelta(minutes=1)


def _floor(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == UsageRollup.Period.DAY else moment


def usage_rollup(*, since: datetime, until: datetime | None = None) -> int:
    """Recompute every hourly and daily bucket that overlaps [since, until). Returns the
    number of rows written (on PostgreSQL, of buckets that were new or had changed).

    Each bucket is recomputed from the records and written again in one transaction, so a
    run is idempotent and readers never see half a bucket. On PostgreSQL the window is
    widened to whole days (a day is summed from all its hours, so all of them are
    recomputed) and run a day at a time, a statement and a transaction each, writing only
    the buckets that changed: rebuilding months of history reads each day once, in
    constant memory, whatever the table's size.
    """
    until = until or timezone.now()
    if connection.vendor != "postgresql":
        return usage_rollup_in_python(since=since, until=until)
    return _rollup_by_day(hours_from=_floor(since, UsageRollup.Period.DAY),
                          hours_until=_floor(until, UsageRollup.Period.DAY) + _DAY)


def _rollup_by_day(*, hours_from: datetime, hours_until: datetime) -> int:
    """Recompute the hours in [hours_from, hours_until) from the records and each day they
    touch from its hours, a day per transaction.

    A day's hours outside the range are read as they are: its caller vouches that they
    were rolled up already and that no record has been written in them since.

    Many days (a rebuild of history) are summed ``PARALLEL_DAYS`` at a time, each on a
    connection of its own: the work is the database's, a day per statement, and one
    connection keeps one of its cores busy. Inside a transaction (the caller's, whose
    records other connections cannot see) the days go one after the other on it.
    """
    windows = list(day_windows(hours_from, hours_until))
    if len(windows) <= 2 or connection.in_atomic_block:
        return sum(_rollup_day(day, hours_from=start, hours_until=end)
                   for day, start, end in windows)
    with ThreadPoolExecutor(max_workers=PARALLEL_DAYS) as pool:
        return sum(pool.map(_rollup_day_on_own_connection, windows))


def _rollup_day_on_own_connection(window: tuple[datetime, datetime, datetime]) -> int:
    day, start, end = window
    try:
        return _rollup_day(day, hours_from=start, hours_until=end)
    finally:
        connection.close()  # this worker thread's; no session is left behind


def _lock_day(cursor: CursorWrapper, day: datetime) -> None:
    """One writer of a day's buckets at a time (the transaction's end releases it)."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ADVISORY_LOCK, day.toordinal()])


def day_windows(hours_from: datetime, hours_until: datetime
                ) -> Iterator[tuple[datetime, datetime, datetime]]:
    """Each UTC day that [hours_from, hours_until) touches, as (the day, the start and the
    end of the range within it): what the roll-ups (usage, workers) redo a day at a time."""
    day = _floor(hours_from, UsageRollup.Period.DAY)
    while day < hours_until:
        yield day, max(hours_from, day), min(hours_until, day + _DAY)
        day += _DAY


def _rollup_day(day: datetime, *, hours_from: datetime, hours_until: datetime) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_day(cursor, day)
        # Compiling the statement (JIT) costs more than running it over a day. A day's
        # buckets are hashed and joined in memory, not in temporary files; and hashed, not
        # sorted and merged: the planner has no statistics on the statement's CTEs and
        # takes their join on the bucket's key for a handful of rows.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute("SET LOCAL enable_mergejoin = off")
        # Nor nested: see DAY_REFRESH_SQL (a guess of one stored row made one quadratic).
        cursor.execute("SET LOCAL enable_nestloop = off")
        window = {"day": day, "day_end": day + _DAY, "hours_from": hours_from,
                  "hours_until": hours_until}
        cursor.execute(DAY_REFRESH_SQL, window)
        written = int(cursor.fetchone()[0])
        cursor.execute(OWNER_REFRESH_SQL, window)
        return written


def usage_rollup_in_python(*, since: datetime, until: datetime | None = None) -> int:
    """``usage_rollup`` through the ORM, every bucket built in Python: what SQLite runs, and
    the reference the SQL is tested against. Only the window's own hours are recomputed."""
    until = until or timezone.now()
    written = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Every day the window's buckets touch, in order (the statements above hold
                # one day's lock at a time, so no two writers wait for each other in a ring).
                for day, _, _ in day_windows(_floor(since, UsageRollup.Period.DAY),
                                             _floor(until, UsageRollup.Period.DAY) + _DAY):
                    _lock_day(cursor, day)
        for period, trunc in ((UsageRollup.Period.HOUR, TruncHour),
                              (UsageRollup.Period.DAY, TruncDay)):
            start = _floor(since, period)
            end = _floor(until, period) + (timedelta(days=1) if period == "day"
                                           else timedelta(hours=1))
            UsageRollup.objects.filter(period=period, bucket_start__gte=start,
                                       bucket_start__lt=end).delete()
            rows = (
                UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
                .annotate(bucket=trunc("created_at", tzinfo=UTC))
                .values("bucket", "user_id", "organization_id", "api_key_id", "model")
                .annotate(requests=Count("id"),
                          failed=Count("id", filter=~Q(status=UsageRecord.Status.OK)),
                          prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
                          cached=Sum("cached_tokens"), cost=Sum("cost_micros"),
                          # NULL (unknown) costs are left out of the sum, and counted.
                          upstream=Sum("upstream_cost_micros"),
                          unknown=Count("id", filter=Q(upstream_cost_micros__isnull=True)),
                          unknown_charged=Sum("cost_micros",
                                              filter=Q(upstream_cost_micros__isnull=True)))
            )
            rollups = [
                UsageRollup(period=period, bucket_start=row["bucket"], user_id=row["user_id"],
                            organization_id=row["organization_id"],
                            api_key_id=row["api_key_id"], model=row["model"],
                            requests=row["requests"], failed_requests=row["failed"],
                            prompt_tokens=row["prompt"], completion_tokens=row["completion"],
                            cached_tokens=row["cached"], cost_micros=row["cost"],
                            upstream_cost_micros=row["upstream"] or 0,
                            unknown_cost_requests=row["unknown"],
                            unknown_cost_charged_micros=row["unknown_charged"] or 0)
                for row in rows
            ]
            UsageRollup.objects.bulk_create(rollups, batch_size=1000)
            written += len(rollups)
            owners_rewrite(period, start, end)
    return written


def owners_rewrite(period: str, start: datetime, end: datetime) -> None:
    """``UsageOwnerRollup`` of ``period`` in [start, end) summed again from ``UsageRollup``
    (the ORM's way of ``OWNER_REFRESH_SQL``)."""
    UsageOwnerRollup.objects.filter(period=period, bucket_start__gte=start,
                                    bucket_start__lt=end).delete()
    sums = (UsageRollup.objects.filter(period=period, bucket_start__gte=start,
                                       bucket_start__lt=end)
            .values("bucket_start", "user_id", "organization_id")
            .annotate(requests=Sum("requests"), cost=Sum("cost_micros")).order_by())
    UsageOwnerRollup.objects.bulk_create(
        [UsageOwnerRollup(period=period, bucket_start=row["bucket_start"],
                          user_id=row["user_id"], organization_id=row["organization_id"],
                          requests=row["requests"], cost_micros=row["cost"])
         for row in sums], batch_size=1000)


def usage_rollup_recent(*, now: datetime | None = None, lag: timedelta = LAG) -> int:
    """What beat runs: from the last hour already rolled up (at least the last two hours,
    and through them today and yesterday, and never after the mark) to now; then the mark
    (``UsageRollupMark``) moves to the hour the roll-ups are now complete before.

    Starting from the latest hourly bucket, not a fixed window, catches up after the job
    did not run for a while (beat stopped overnight, a deploy): the records written since
    its last run are rolled up whenever it runs again. No bucket yet: everything.

    On PostgreSQL only those hours are summed from the records; their days are summed from
    their hours. The day's earlier hours are as the runs before left them, which is what
    the records say: records are only ever inserted, stamped with the start of the
    transaction that writes them, and the mark never passes ``lag`` ago nor the start of
    the oldest transaction still open (see ``open_transactions``), so a record stamped
    before the mark was committed before this run summed its hour. Given ``now`` (tests, a
    backfill), the caller vouches that nothing stamped before ``now - lag`` is still to be
    committed.
    """
    given = now is not None
    now = now or timezone.now()
    until = now - lag
    if not given:
        until = min(until, oldest_open_transaction() or until)
    mark = UsageRollupMark.objects.filter(pk=1).first()
    latest = UsageRollup.objects.filter(period=UsageRollup.Period.HOUR).aggregate(
        latest=Max("bucket_start"))["latest"]
    if latest is None:
        first = UsageRecord.objects.aggregate(first=Min("created_at"))["first"] or now
        written = usage_rollup(since=min(first, now - timedelta(hours=2)), until=now)
    else:
        since = min(latest, now - timedelta(hours=2))
        if mark is not None:
            since = min(since, mark.complete_before)
        if connection.vendor != "postgresql":
            written = usage_rollup_in_python(since=since, until=now)
        else:
            written = _rollup_by_day(hours_from=_floor(since, UsageRollup.Period.HOUR),
                                     hours_until=_floor(now, UsageRollup.Period.HOUR) + _HOUR)
    complete_before = _floor(until, UsageRollup.Period.HOUR)
    # Never back (a clock that went back, a backfill to an earlier time): the hours before
    # the mark stay complete.
    if mark is None or complete_before > mark.complete_before:
        UsageRollupMark.objects.update_or_create(
            pk=1, defaults={"complete_before": complete_before})
    return written
