"""Ledger days: each wallet's ledger summed per day, kind and model (``LedgerDay``), what
monthly statements read instead of a month of entries.

On PostgreSQL only; the embedded SQLite mode's statements read their small ledgers
directly. Beat runs ``ledger_days_refresh`` every minute: it recomputes, a day at a time,
the days from the last run's mark to a minute ago, and moves the mark (``LedgerDayMark``)
in the same transaction as the days it vouches for. The first run (or ``rebuild``) sums the
whole ledger, a day per statement and transaction, in constant memory.

Why the mark trails the clock: entries are stamped when they are written and committed a
moment later, so an entry stamped before the mark but not yet committed when the days are
summed would be in neither the days nor the tail. The mark is never later than ``LAG`` ago
nor than the start of the oldest transaction still open on the database (an entry is
stamped inside the transaction that writes it, so every entry still to be committed is
stamped after that). Readers take everything after the mark from the ledger itself. A day
is recomputed whole each time (never incremented), so a run repeated or late gives the
same rows, and for ``LATE`` after midnight the day before is recomputed too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from billing.models import LedgerDayMark, LedgerEntry
from billing.services.ledger_day_statements import DAY_REFRESH_SQL, TAIL_BOUND_SQL
from billing.services.open_transactions import oldest_open_transaction

LAG = timedelta(minutes=1)
LATE = timedelta(minutes=10)
# Any number taken by nothing else: one refresh at a time.
_ADVISORY_LOCK = 7_400_103
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Refreshed:
    days: int  # days recomputed
    rows: int  # day rows written (new, changed or gone)
    complete_before: datetime | None  # the mark now (None: nothing to do on this database)


def local_day(moment: datetime) -> date:
    """The day ``moment`` falls on in the site's time zone (statements' months are local)."""
    return timezone.localtime(moment, timezone.get_default_timezone()).date()


def day_start(day: date) -> datetime:
    tz = timezone.get_default_timezone()
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def ledger_days_refresh(*, now: datetime | None = None, lag: timedelta = LAG,
                        rebuild: bool = False) -> Refreshed:
    """Bring the ledger days up to ``lag`` before now, or before the oldest transaction
    still open if that is earlier (everything again when ``rebuild``). Given ``now`` (tests,
    a backfill to a chosen time), the days go to ``now - lag`` and the caller vouches that
    nothing stamped before it is still to be committed."""
    if connection.vendor != "postgresql":
        return Refreshed(days=0, rows=0, complete_before=None)
    until = (now or timezone.now()) - lag
    if now is None:
        until = min(until, oldest_open_transaction() or until)
    mark = LedgerDayMark.objects.filter(pk=1).first()
    if mark is not None and mark.complete_before > until:
        until = mark.complete_before  # a clock that went back: never move the mark back
    if mark is None or rebuild:
        first = LedgerEntry.objects.order_by("id").values_list("created_at", flat=True).first()
        first_day = local_day(min(first or until, until))
    else:
        first_day = local_day(mark.complete_before - LATE)
    # Days before the mark's own day were complete before this run: readers take them as
    # they are, so each may be replaced in its own transaction. The mark's day and after
    # are partly in the tail readers add to the days; they change with the mark, at once.
    with_mark_from = local_day(mark.complete_before) if mark is not None else local_day(until)
    days = list(_days(first_day, local_day(until)))
    rows = 0
    for day in (d for d in days if d < with_mark_from):
        with transaction.atomic():
            rows += _refresh_day(day, until)
    with transaction.atomic():
        for day in (d for d in days if d >= with_mark_from):
            rows += _refresh_day(day, until)
        _mark_move(until, previous=mark)
    return Refreshed(days=len(days), rows=rows, complete_before=until)


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += _DAY


def _refresh_day(day: date, until: datetime) -> int:
    start = day_start(day)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        # Compiling the statement (JIT) costs more than running it over a day.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(DAY_REFRESH_SQL, {
            "day": day, "from": start, "until": min(day_start(day + _DAY), until),
            "holds_from": start - _DAY})
        return int(cursor.fetchone()[0])


def _mark_move(until: datetime, *, previous: LedgerDayMark | None) -> None:
    """The mark to ``until``, with a tail bound every entry created since has an id above:
    the highest id of an entry created before ``until - LATE`` (an entry stamped after
    ``until`` was written after it, whatever skew the app servers' clocks have within
    ``LATE``), looked for in the hour before that, else in the days already summed, and
    never below the previous bound (which still holds for a later mark)."""
    with connection.cursor() as cursor:
        cursor.execute(TAIL_BOUND_SQL, {"before": until - LATE,
                                        "before_day": local_day(until - LATE)})
        bound = max(int(cursor.fetchone()[0] or 0),
                    previous.tail_after_id if previous is not None else 0)
    LedgerDayMark.objects.update_or_create(
        pk=1, defaults={"complete_before": until, "tail_after_id": bound})
