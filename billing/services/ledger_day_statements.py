"""The ledger days' SQL on PostgreSQL: a day of the ledger summed per wallet, kind and model
in one statement, and what a monthly statement reads back.

Charges and request refunds are shown per model of their request, which is the hold's
(``billing_hold.model``). A day's charges are joined to the holds of that day and the day
before (a hash join over two monthly partitions at most: a request's hold is created before
its charge, by at most the length of the request); entries whose hold is older (the refund
of a request of last month, a day-long stream) look theirs up by id. A hold dropped by the
retention policy leaves the model empty, as a statement read from the ledger shows it.
"""

from __future__ import annotations

# The model an entry is shown under: its request's, for charges and request refunds. The
# day's statement finds most holds in its join (``h``), the reader's tail by id.
_HOLD_MODEL = "(SELECT model FROM billing_hold WHERE id = l.hold_id)"
_MODEL_JOINED = ("CASE WHEN l.kind IN ('charge', 'refund') "
                 f"THEN coalesce(h.model, {_HOLD_MODEL}, '') ELSE '' END")
_MODEL_BY_ID = ("CASE WHEN l.kind IN ('charge', 'refund') "
                f"THEN coalesce({_HOLD_MODEL}, '') ELSE '' END")

# One day (in the site's time zone) of the ledger, [from, until), written into that day's
# rows: a row whose sums changed is updated, a new one inserted, one that no longer has
# entries deleted; an unchanged row is not written (a run every minute mostly reads).
# Returns how many rows it wrote.
DAY_REFRESH_SQL = f"""
WITH fresh AS (
    SELECT l.wallet_id, l.kind, {_MODEL_JOINED} AS model, count(*) AS entries,
           sum(l.amount_micros)::bigint AS amount_micros, max(l.id) AS last_entry_id
      FROM billing_ledgerentry AS l
      LEFT JOIN billing_hold AS h
        ON h.id = l.hold_id AND h.created_at >= %(holds_from)s AND h.created_at < %(until)s
     WHERE l.created_at >= %(from)s AND l.created_at < %(until)s
     GROUP BY 1, 2, 3
), written AS (
    INSERT INTO billing_ledgerday (wallet_id, day, kind, model, entries, amount_micros,
                                   last_entry_id)
    SELECT wallet_id, %(day)s, kind, model, entries, amount_micros, last_entry_id FROM fresh
    ON CONFLICT (wallet_id, day, kind, model) DO UPDATE
       SET entries = excluded.entries, amount_micros = excluded.amount_micros,
           last_entry_id = excluded.last_entry_id
     WHERE (billing_ledgerday.entries, billing_ledgerday.amount_micros,
            billing_ledgerday.last_entry_id)
           IS DISTINCT FROM (excluded.entries, excluded.amount_micros, excluded.last_entry_id)
    RETURNING 1
), gone AS (
    -- NOT IN over the fresh keys (never NULL) is a hashed subplan whatever the planner
    -- guesses of ``fresh``'s size (it guesses one row: a NOT EXISTS became a nested loop
    -- comparing every stored row with every fresh one, 7 s for a day of 6,000 rows).
    DELETE FROM billing_ledgerday AS d
     WHERE d.day = %(day)s
       AND (d.wallet_id, d.kind, d.model) NOT IN (SELECT wallet_id, kind, model FROM fresh)
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) + (SELECT count(*) FROM gone)
"""  # noqa: S608 - only this module's constants are formatted in

# A bound for the next reader's tail: the highest id among entries created in the hour
# before ``before``; none there (a quiet hour), the highest of the days summed before its
# day (a scan of the small days table, seldom needed).
TAIL_BOUND_SQL = """
SELECT coalesce(
    (SELECT max(id) FROM billing_ledgerentry
      WHERE created_at >= %(before)s - interval '1 hour' AND created_at < %(before)s),
    (SELECT max(last_entry_id) FROM billing_ledgerday WHERE day < %(before_day)s))
"""

def _last_id_before(label: str, day: str, moment: str) -> str:
    """The row naming the wallet's last entry before ``moment`` (a midnight, ``day``): the
    highest of its days' last entries before that day and of its tail before it."""
    return f"""
SELECT 'last_id', '{label}', '', 0,
       greatest((SELECT max(last_entry_id) FROM billing_ledgerday
                  WHERE wallet_id = %(wallet)s AND day < %({day})s),
                (SELECT max(id) FROM tail WHERE created_at < %({moment})s))
  FROM mark"""  # noqa: S608 - only this module's names are formatted in


# A wallet's month from its days, plus the entries written since the mark (the tail): its
# lines per kind and model, and the ids of its last entries before the month's start and
# end, whose running balances are the statement's opening and closing. One statement, so
# the days and the mark come from one snapshot: a refresh committing meanwhile is seen
# whole or not at all. No mark: no row at all (the days are not there yet).
MONTH_SQL = f"""
WITH mark AS (
    SELECT complete_before, tail_after_id FROM billing_ledgerdaymark WHERE id = 1
), tail AS (
    SELECT l.id, l.kind, l.amount_micros, l.created_at, {_MODEL_BY_ID} AS model
      FROM mark, billing_ledgerentry AS l
     WHERE l.wallet_id = %(wallet)s AND l.id > mark.tail_after_id
       AND l.created_at >= mark.complete_before
), lines AS (
    SELECT kind, model, sum(entries)::bigint AS entries, sum(amount_micros)::bigint AS amount
      FROM (SELECT kind, model, entries, amount_micros FROM billing_ledgerday
             WHERE wallet_id = %(wallet)s AND day >= %(first_day)s AND day < %(end_day)s
            UNION ALL
            SELECT kind, model, 1, amount_micros FROM tail
             WHERE created_at >= %(start)s AND created_at < %(end)s) AS month
     GROUP BY kind, model
)
SELECT 'line', kind, model, entries, amount FROM lines, mark
UNION ALL {_last_id_before("opening", "first_day", "start")}
UNION ALL {_last_id_before("closing", "end_day", "end")}
"""  # noqa: S608 - only this module's constants are formatted in
