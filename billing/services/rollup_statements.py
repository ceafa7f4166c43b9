"""The usage roll-up's SQL on PostgreSQL: buckets summed in the database, no row in Python,
one statement per day.

Hours are summed from the usage records, days from the hours: a day is its 24 hours, so
beat's run, which rolls up the last two hours, re-reads those two hours of records and the
day's hourly rows, not the day's records. The sums are those of
``rollups.usage_rollup_in_python`` (the reference, and what SQLite runs): NULL upstream
costs are left out of ``upstream_cost_micros`` and counted, with what they were charged, in
``unknown_cost_requests`` and ``unknown_cost_charged_micros``; a bucket starts on the UTC
hour or day.

A window's buckets are compared with what is stored, and only those that differ are
written: a bucket that gained requests is replaced, one that lost them all is deleted, one
that did not change is left alone. Rolling up history again (or the same hour every five
minutes) then mostly reads; deleting and inserting every row would write, index and later
vacuum all of them each time, which is most of what a rebuild of months would cost. A
bucket is never stored twice: only these statements write roll-ups on PostgreSQL, one day
at a time under an advisory lock.
"""

from __future__ import annotations

# The hours of [hours_from, hours_until) as the records say, the NULL organization and key
# as 0 (ids are never 0) so that every comparison below is a plain equality a hash join can
# use.
_HOURS_FROM_RECORDS = """
SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket_start,
       user_id, coalesce(organization_id, 0) AS org, coalesce(api_key_id, 0) AS key, model,
       count(*) AS requests, count(*) FILTER (WHERE status <> 'ok') AS failed_requests,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(cached_tokens)::bigint AS cached_tokens, sum(cost_micros)::bigint AS cost_micros,
       coalesce(sum(upstream_cost_micros), 0)::bigint AS upstream_cost_micros,
       count(*) FILTER (WHERE upstream_cost_micros IS NULL) AS unknown_cost_requests,
       coalesce(sum(cost_micros) FILTER (WHERE upstream_cost_micros IS NULL), 0)::bigint
           AS unknown_cost_charged_micros
  FROM billing_usagerecord
 WHERE created_at >= %(hours_from)s AND created_at < %(hours_until)s
 GROUP BY 1, 2, 3, 4, 5
"""

_KEY = "bucket_start, user_id, org, key, model"
_SUM_COLUMNS = ("requests", "failed_requests", "prompt_tokens", "completion_tokens",
                "cached_tokens", "cost_micros", "upstream_cost_micros",
                "unknown_cost_requests", "unknown_cost_charged_micros")
_SUMS = ", ".join(_SUM_COLUMNS)
# Joined on the bucket's key, then compared: the planner estimates a join on the key well
# (and hashes it), where one on all fourteen columns looks like it matches nothing.
_SAME_SUMS = " AND ".join(f"stored.{column} = fresh.{column}" for column in _SUM_COLUMNS)

# One day: its hours in [hours_from, hours_until) from the records, then the day from all
# its hours (those stored outside that range, the fresh ones inside it). Rows that go are
# found by their range and a hashed NOT IN, and every join is a hash join: the statistics
# of the roll-ups never cover today's buckets (the planner guessed one stored row), and a
# nested loop then compared every stored bucket with every fresh one (10,000 x 10,000, 15 s
# at 10M records). Only ``rollups._rollup_day`` runs it, with nested loops turned off.
# For each period, ``kept`` are the stored rows equal to a fresh bucket; every other
# stored row of the range goes and every fresh bucket not kept comes in. One statement, so
# one snapshot: a reader sees the day before or after, never between; and every CTE reads
# the rows as they were before it, hence the day summed from ``day_hours`` rather than from
# the table.
DAY_REFRESH_SQL = f"""
WITH fresh_hours AS ({_HOURS_FROM_RECORDS}
), stored_hours AS (
    SELECT id, bucket_start, user_id, coalesce(organization_id, 0) AS org,
           coalesce(api_key_id, 0) AS key, model, {_SUMS},
           bucket_start >= %(hours_from)s AND bucket_start < %(hours_until)s AS recomputed
      FROM billing_usagerollup
     WHERE period = 'hour' AND bucket_start >= %(day)s AND bucket_start < %(day_end)s
), kept_hours AS (
    SELECT stored.id, {_KEY}
      FROM stored_hours AS stored JOIN fresh_hours AS fresh USING ({_KEY})
     WHERE stored.recomputed AND {_SAME_SUMS}
), gone_hours AS (
    DELETE FROM billing_usagerollup
     WHERE period = 'hour' AND bucket_start >= %(hours_from)s
       AND bucket_start < %(hours_until)s AND id NOT IN (SELECT id FROM kept_hours)
), new_hours AS (
    INSERT INTO billing_usagerollup (period, bucket_start, user_id, organization_id,
                                     api_key_id, model, {_SUMS})
    SELECT 'hour', f.bucket_start, f.user_id, nullif(f.org, 0), nullif(f.key, 0), f.model,
           {_SUMS}
      FROM fresh_hours AS f LEFT JOIN kept_hours AS k USING ({_KEY})
     WHERE k.id IS NULL
    RETURNING 1
), day_hours AS (
    SELECT {_KEY}, {_SUMS} FROM stored_hours WHERE NOT recomputed
    UNION ALL
    SELECT {_KEY}, {_SUMS} FROM fresh_hours
), fresh_days AS (
    SELECT %(day)s::timestamptz AS bucket_start, user_id, org, key, model,
           sum(requests)::bigint AS requests, sum(failed_requests)::bigint AS failed_requests,
           sum(prompt_tokens)::bigint AS prompt_tokens,
           sum(completion_tokens)::bigint AS completion_tokens,
           sum(cached_tokens)::bigint AS cached_tokens, sum(cost_micros)::bigint AS cost_micros,
           sum(upstream_cost_micros)::bigint AS upstream_cost_micros,
           sum(unknown_cost_requests)::bigint AS unknown_cost_requests,
           sum(unknown_cost_charged_micros)::bigint AS unknown_cost_charged_micros
      FROM day_hours GROUP BY user_id, org, key, model
), stored_days AS (
    SELECT id, bucket_start, user_id, coalesce(organization_id, 0) AS org,
           coalesce(api_key_id, 0) AS key, model, {_SUMS}
      FROM billing_usagerollup
     WHERE period = 'day' AND bucket_start >= %(day)s AND bucket_start < %(day_end)s
), kept_days AS (
    SELECT stored.id, {_KEY}
      FROM stored_days AS stored JOIN fresh_days AS fresh USING ({_KEY})
     WHERE {_SAME_SUMS}
), gone_days AS (
    DELETE FROM billing_usagerollup
     WHERE period = 'day' AND bucket_start >= %(day)s AND bucket_start < %(day_end)s
       AND id NOT IN (SELECT id FROM kept_days)
), new_days AS (
    INSERT INTO billing_usagerollup (period, bucket_start, user_id, organization_id,
                                     api_key_id, model, {_SUMS})
    SELECT 'day', f.bucket_start, f.user_id, nullif(f.org, 0), nullif(f.key, 0), f.model,
           {_SUMS}
      FROM fresh_days AS f LEFT JOIN kept_days AS k USING ({_KEY})
     WHERE k.id IS NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM new_hours) + (SELECT count(*) FROM new_days)
"""  # noqa: S608 - only this module's constants are formatted in

# The owners' sums of the buckets a day's statement (above) just rewrote, from those buckets
# in the same transaction: its hours in [hours_from, hours_until) and the day itself. Like
# the buckets, only rows whose sums changed are written (an upsert that skips equal rows),
# and those whose owner no longer has a bucket there are deleted: rewriting every row on
# each run left the table and its index mostly dead rows for the dashboard to wade through.
_OWNER_BUCKETS = """
(period = 'hour' AND bucket_start >= %(hours_from)s AND bucket_start < %(hours_until)s)
 OR (period = 'day' AND bucket_start >= %(day)s AND bucket_start < %(day_end)s)
"""
OWNER_REFRESH_SQL = f"""
WITH fresh AS (
    SELECT period, bucket_start, user_id, organization_id, sum(requests) AS requests,
           sum(cost_micros) AS cost_micros
      FROM billing_usagerollup
     WHERE {_OWNER_BUCKETS}
     GROUP BY period, bucket_start, user_id, organization_id
), gone AS (
    DELETE FROM billing_usageownerrollup AS o
     WHERE ({_OWNER_BUCKETS})
       AND (period, bucket_start, user_id, coalesce(organization_id, 0)) NOT IN (
           SELECT period, bucket_start, user_id, coalesce(organization_id, 0) FROM fresh)
)
INSERT INTO billing_usageownerrollup (period, bucket_start, user_id, organization_id,
                                      requests, cost_micros)
SELECT period, bucket_start, user_id, organization_id, requests, cost_micros FROM fresh
    ON CONFLICT (period, bucket_start, user_id, coalesce(organization_id, 0)) DO UPDATE
   SET requests = EXCLUDED.requests, cost_micros = EXCLUDED.cost_micros
 WHERE (billing_usageownerrollup.requests, billing_usageownerrollup.cost_micros)
       IS DISTINCT FROM (EXCLUDED.requests, EXCLUDED.cost_micros)
"""  # noqa: S608 - only this module's constants are formatted in
