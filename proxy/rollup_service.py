"""The fleet roll-up: usage per hour and day, worker and model, recomputed from the usage
records a window at a time.

On PostgreSQL the database does the sums, a day per transaction: hours with one INSERT ...
SELECT ... GROUP BY over the records, the day from its 24 hours (histograms merged key by
key), so a run costs the hours it recomputes and a rebuild of history runs in bounded
memory. The embedded SQLite mode, whose histories are small, sums in Python. Either way a
bucket's rows are deleted and written again in one transaction, so a run is idempotent and
readers never see half a bucket. The same reasoning as ``billing.services.rollups``, which
this follows.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from billing.models import UsageRecord
from billing.services.rollups import day_windows
from proxy.rollups import BOUNDS_MS, WorkerRollup

# Any number taken by nothing else (billing's roll-up uses 7_400_101).
_ADVISORY_LOCK = 7_400_102
_PERIODS = (WorkerRollup.Period.HOUR, WorkerRollup.Period.DAY)


def bucket_floor(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == WorkerRollup.Period.DAY else moment


def _step(period: str) -> timedelta:
    return timedelta(days=1) if period == WorkerRollup.Period.DAY else timedelta(hours=1)


_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

# Histograms as sparse JSON objects: one GROUP BY (bucket, worker, model, histogram bucket)
# then jsonb_object_agg, rather than 52 FILTERed counts per row evaluated on every record.
_INSERT = """
WITH r AS (
    SELECT date_trunc(%(unit)s, created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b,
           worker, model, status, prompt_tokens, completion_tokens, cost_micros,
           upstream_cost_micros,
           width_bucket(latency_ms, %(bounds)s::int[]) AS lb,
           width_bucket(ttft_ms, %(bounds)s::int[]) AS tb
    FROM billing_usagerecord
    WHERE created_at >= %(start)s AND created_at < %(end)s
), totals AS (
    SELECT b, worker, model, count(*) AS requests,
           count(*) FILTER (WHERE status <> 'ok') AS failed,
           sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
           sum(cost_micros) AS cost,
           coalesce(sum(cost_micros) FILTER (WHERE upstream_cost_micros IS NOT NULL), 0)
               AS known_cost,
           coalesce(sum(upstream_cost_micros), 0) AS upstream,
           count(*) FILTER (WHERE upstream_cost_micros IS NULL) AS unknown
    FROM r GROUP BY b, worker, model
), lat AS (
    SELECT b, worker, model, jsonb_object_agg(lb, n) AS hist FROM (
        SELECT b, worker, model, lb, count(*) AS n FROM r WHERE lb IS NOT NULL
        GROUP BY b, worker, model, lb) AS x
    GROUP BY b, worker, model
), ttft AS (
    SELECT b, worker, model, jsonb_object_agg(tb, n) AS hist FROM (
        SELECT b, worker, model, tb, count(*) AS n FROM r WHERE tb IS NOT NULL
        GROUP BY b, worker, model, tb) AS x
    GROUP BY b, worker, model
)
INSERT INTO proxy_workerrollup (period, bucket_start, worker, model, requests,
    failed_requests, prompt_tokens, completion_tokens, cost_micros, known_cost_micros,
    upstream_cost_micros, unknown_cost_requests, latency_hist, ttft_hist)
SELECT %(period)s, t.b, t.worker, t.model, t.requests, t.failed, t.prompt, t.completion,
       t.cost, t.known_cost, t.upstream, t.unknown,
       coalesce(lat.hist, '{}'::jsonb), coalesce(ttft.hist, '{}'::jsonb)
FROM totals AS t
LEFT JOIN lat USING (b, worker, model)
LEFT JOIN ttft USING (b, worker, model)
"""


# A day from its hours: the totals summed, each histogram merged by summing its counts
# key by key (the keys are the same bucket indexes as the hours').
_DAYS_FROM_HOURS = """
WITH h AS (
    SELECT date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b,
           worker, model, requests, failed_requests, prompt_tokens, completion_tokens,
           cost_micros, known_cost_micros, upstream_cost_micros, unknown_cost_requests,
           latency_hist, ttft_hist
      FROM proxy_workerrollup
     WHERE period = 'hour' AND bucket_start >= %(start)s AND bucket_start < %(end)s
), totals AS (
    SELECT b, worker, model, sum(requests) AS requests, sum(failed_requests) AS failed,
           sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
           sum(cost_micros) AS cost, sum(known_cost_micros) AS known_cost,
           sum(upstream_cost_micros) AS upstream, sum(unknown_cost_requests) AS unknown
      FROM h GROUP BY b, worker, model
), lat AS (
    SELECT b, worker, model, jsonb_object_agg(k, n) AS hist FROM (
        SELECT b, worker, model, e.key AS k, sum(e.value::bigint) AS n
          FROM h CROSS JOIN LATERAL jsonb_each_text(h.latency_hist) AS e
         GROUP BY b, worker, model, e.key) AS x
    GROUP BY b, worker, model
), ttft AS (
    SELECT b, worker, model, jsonb_object_agg(k, n) AS hist FROM (
        SELECT b, worker, model, e.key AS k, sum(e.value::bigint) AS n
          FROM h CROSS JOIN LATERAL jsonb_each_text(h.ttft_hist) AS e
         GROUP BY b, worker, model, e.key) AS x
    GROUP BY b, worker, model
)
INSERT INTO proxy_workerrollup (period, bucket_start, worker, model, requests,
    failed_requests, prompt_tokens, completion_tokens, cost_micros, known_cost_micros,
    upstream_cost_micros, unknown_cost_requests, latency_hist, ttft_hist)
SELECT 'day', t.b, t.worker, t.model, t.requests, t.failed, t.prompt, t.completion,
       t.cost, t.known_cost, t.upstream, t.unknown,
       coalesce(lat.hist, '{}'::jsonb), coalesce(ttft.hist, '{}'::jsonb)
FROM totals AS t
LEFT JOIN lat USING (b, worker, model)
LEFT JOIN ttft USING (b, worker, model)
"""


def worker_rollup(*, since: datetime, until: datetime | None = None) -> int:
    """Recompute every hourly and daily bucket that overlaps [since, until). Returns the
    number of rows written.

    On PostgreSQL the window is widened to whole days (a day is summed from all its hours,
    so all of them are recomputed) and run a day at a time.
    """
    until = until or timezone.now()
    if connection.vendor != "postgresql":
        return worker_rollup_in_python(since=since, until=until)
    return _rollup_by_day(hours_from=bucket_floor(since, WorkerRollup.Period.DAY),
                          hours_until=bucket_floor(until, WorkerRollup.Period.DAY) + _DAY)


def _rollup_by_day(*, hours_from: datetime, hours_until: datetime) -> int:
    """Recompute the hours in [hours_from, hours_until) from the records and each day they
    touch from its hours, a day per transaction. A day's hours outside the range are read
    as they are: its caller vouches that they are rolled up already."""
    return sum(_rollup_day(day, hours_from=start, hours_until=end)
               for day, start, end in day_windows(hours_from, hours_until))


def _rollup_day(day: datetime, *, hours_from: datetime, hours_until: datetime) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        written = 0
        for period, start, end in ((WorkerRollup.Period.HOUR, hours_from, hours_until),
                                   (WorkerRollup.Period.DAY, day, day + _DAY)):
            WorkerRollup.objects.filter(period=period, bucket_start__gte=start,
                                        bucket_start__lt=end).delete()
            if period == WorkerRollup.Period.HOUR:
                cursor.execute(_INSERT, {"unit": period, "bounds": list(BOUNDS_MS),
                                         "start": start, "end": end, "period": period})
            else:
                cursor.execute(_DAYS_FROM_HOURS, {"start": start, "end": end})
            written += cursor.rowcount
        return written


def worker_rollup_in_python(*, since: datetime, until: datetime | None = None) -> int:
    """``worker_rollup`` with every bucket summed in Python from the records: what SQLite
    runs, and the reference the SQL is tested against. Only the window's own hours are
    recomputed."""
    until = until or timezone.now()
    written = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        for period in _PERIODS:
            start = bucket_floor(since, period)
            end = bucket_floor(until, period) + _step(period)
            WorkerRollup.objects.filter(period=period, bucket_start__gte=start,
                                        bucket_start__lt=end).delete()
            written += _rollup_in_python(period, start, end)
    return written


def _rollup_in_python(period: str, start: datetime, end: datetime) -> int:
    rows: dict[tuple[datetime, str, str], WorkerRollup] = {}
    lat: dict[tuple[datetime, str, str], dict[str, int]] = defaultdict(dict)
    ttft: dict[tuple[datetime, str, str], dict[str, int]] = defaultdict(dict)
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end).values_list(
        "created_at", "worker", "model", "status", "prompt_tokens", "completion_tokens",
        "cost_micros", "upstream_cost_micros", "latency_ms", "ttft_ms")
    for (created, worker, model, status, prompt, completion, cost, upstream, latency,
         first_token) in records.iterator(chunk_size=2000):
        key = (bucket_floor(created, period), worker, model)
        row = rows.get(key)
        if row is None:
            row = rows[key] = WorkerRollup(period=period, bucket_start=key[0], worker=worker,
                                           model=model)
        row.requests += 1
        row.failed_requests += status != UsageRecord.Status.OK
        row.prompt_tokens += prompt
        row.completion_tokens += completion
        row.cost_micros += cost
        if upstream is None:
            row.unknown_cost_requests += 1
        else:
            row.known_cost_micros += cost
            row.upstream_cost_micros += upstream
        for value, hist in ((latency, lat[key]), (first_token, ttft[key])):
            if value is not None:
                index = str(bisect_right(BOUNDS_MS, value))
                hist[index] = hist.get(index, 0) + 1
    for key, row in rows.items():
        row.latency_hist, row.ttft_hist = lat.get(key, {}), ttft.get(key, {})
    WorkerRollup.objects.bulk_create(rows.values(), batch_size=1000)
    return len(rows)


def worker_rollup_recent(*, now: datetime | None = None) -> int:
    """What beat runs: from the latest hour already rolled up (at least the last two hours)
    to now, so a job that did not run for a while catches up. No bucket yet: everything.

    On PostgreSQL only those hours are summed from the records and their days from their
    hours; the day's earlier hours stay as earlier runs left them, which is what the
    records say (records are only inserted, stamped when written, and every run
    recomputes at least the two hours before it).
    """
    now = now or timezone.now()
    latest = WorkerRollup.objects.filter(period=WorkerRollup.Period.HOUR).aggregate(
        latest=Max("bucket_start"))["latest"]
    if latest is None:
        first = UsageRecord.objects.aggregate(first=Min("created_at"))["first"] or now
        return worker_rollup(since=min(first, now - timedelta(hours=2)), until=now)
    since = min(latest, now - timedelta(hours=2))
    if connection.vendor != "postgresql":
        return worker_rollup_in_python(since=since, until=now)
    return _rollup_by_day(hours_from=bucket_floor(since, WorkerRollup.Period.HOUR),
                          hours_until=bucket_floor(now, WorkerRollup.Period.HOUR) + _HOUR)
