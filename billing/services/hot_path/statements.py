"""The request path's SQL: one statement per request, and the same work for many requests.

Every statement keeps the rules of the ORM services in ``billing.services.holds`` (the
reference): a hold is taken only while ``posted - pending >= amount``; a settle moves only a
hold that is still pending; the hold, the wallet, the ledger entry, the key's budget and the
usage record change together or not at all.

A request's answer never goes out before its hold is on the disk (PostgreSQL crashing
before would forget the hold of an answer already given, never to be charged), yet the
request does not wait for the disk before calling its upstream: a reservation's rows come
back before its commit is done (``connections.fetch_before_commit``), the request calls
its upstream meanwhile, and only its answer waits for the commit (``hold_commits``).

- A group of reservations (``RESERVE_MANY_SQL``), or one on its own while others are
  committing (``RESERVE_BUSY_SQL``), commits without waiting for the disk
  (``synchronous_commit`` off for its own transaction only), and ``DURABLE_SQL`` follows
  it in the same round trip: a transaction of its own that writes a WAL record and
  commits waiting for the disk, which flushes the WAL up to and past the reservation's
  commit without holding any lock. Waiting for the disk inside the reservation's
  transaction kept its wallets' rows locked through it: at concurrency 64 on one wallet,
  8-10 % fewer requests/s (``bench/stalls.py``).
- A reservation on its own in a quiet process (``RESERVE_SQL``) commits waiting for the
  disk, as every other statement here does: nobody is waiting for its wallet's row, and
  the statement behind it would cost a quiet request more (8 % more added latency at
  concurrency 1 in ``bench/ab_routers.py``).

(Until 2026-12, reservations committed without waiting for the disk and nothing waited
for that: PostgreSQL crashing in the fraction of a second after could forget the hold of
a request whose answer then went out uncharged.)

A charge's ledger entry is stamped with ``clock_timestamp()``, when it is written under its
wallet's lock, not ``now()`` (its transaction's start): a wallet's entries then follow the
order of their running balance in time too, so a monthly statement's opening and closing
balances chain even for a charge that began before midnight and committed after a top-up.

Lock order, everywhere: hold rows, then wallet rows (by id when there are several), then
budget rows. The ``*_MANY`` statements lock their wallets with an ordered ``FOR NO KEY
UPDATE`` first, so two of them sharing wallets (two processes, two instances) queue
instead of deadlocking; a budget row belongs to one wallet's key (a member budget, to one
organization's wallet), so its lock is only ever taken under that wallet's. PostgreSQL
runs a statement's data-modifying ``WITH`` parts in an order of its own (the ones the
final ``SELECT`` does not read, last part first), keeping only the order their reads of
each other impose: so every budget update reads the ``wallet`` part, which makes it wait
for the wallets' locks.

A settle writes its usage records before it locks any wallet (the wallet's lock reads
them): they are its largest part (a row and eight index entries each), and every
reservation of a wallet waits while a settle holds it. At concurrency 64 on 64 wallets a
settle of about forty requests took 12 ms at the median, and the reservations behind it
queued for its wallets.

Holds and usage records are partitioned by month of ``created_at`` on PostgreSQL (billing
migration 0021). A hold's ``created_at`` is therefore chosen by the router, not ``now()``:
the moment the reservation was first asked, carried by every try of it, so a retried
statement hits its own hold's primary key ``(id, created_at)``, and the settle names the
hold's partition (``*_AT_SQL``), where PostgreSQL looks in that one partition only instead
of probing every month's index. A settle that does not know the time (a hold reserved by
another process, or before a restart) runs the statement without it, which probes each
partition's index once: a number the retention policy keeps bounded.

A wallet is named by its id (a user's or an organization's, ``proxy.selectors.Caller``). An
organization key's member budget is found through the key (its organization and owner,
neither of which ever changes), in the reservation and in the settle alike; a service key
and a personal key have none.
"""

from __future__ import annotations

RESERVE_SQL = """
WITH wallet AS (
    UPDATE billing_wallet
       SET pending_micros = pending_micros + %(amount)s, updated_at = now()
     WHERE id = %(wallet_id)s AND posted_micros - pending_micros >= %(amount)s
 RETURNING id
), hold AS (
    INSERT INTO billing_hold (id, wallet_id, api_key_id, price_id, model, amount_micros,
                              charged_micros, status, created_at, expires_at)
    SELECT %(hold_id)s, wallet.id, %(api_key_id)s, %(price_id)s, %(model)s, %(amount)s,
           0, 'pending', %(created_at)s, %(expires_at)s
      FROM wallet
 RETURNING id
), budget AS (
    -- Only once the wallet had room; a cap it would pass breaks a CHECK on the budget
    -- row and fails the whole statement (see KeyBudget).
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros + %(amount)s,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM wallet
     WHERE b.api_key_id = %(api_key_id)s
), member AS (
    -- The key's owner's budget in its organization, the same way (see MemberBudget).
    UPDATE billing_memberbudget AS m
       SET pending_micros = m.pending_micros + %(amount)s,
           month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM wallet, accounts_apikey AS k
     WHERE k.id = %(api_key_id)s AND NOT k.service
       AND m.organization_id = k.organization_id AND m.user_id = k.user_id
)
SELECT count(*) FROM hold
"""

# Many reservations: each wallet is asked once for the sum of its requests' holds, and
# grants all of them or none (its requests then try one by one with RESERVE_SQL, which
# grants as many as fit, in the order they arrived).
RESERVE_MANY_SQL = """
WITH item AS (
    SELECT * FROM json_to_recordset(%(items)s::json)
        AS r(hold_id text, wallet_id bigint, amount_micros bigint, price_id bigint,
             model text, api_key_id bigint, expires_at timestamptz,
             created_at timestamptz)
), asked AS (
    SELECT wallet_id, sum(amount_micros) AS total FROM item GROUP BY wallet_id
), locked AS (
    SELECT w.id FROM billing_wallet AS w
     WHERE w.id IN (SELECT wallet_id FROM asked)
     ORDER BY w.id FOR NO KEY UPDATE
), wallet AS (
    UPDATE billing_wallet AS w
       SET pending_micros = w.pending_micros + asked.total, updated_at = now()
      FROM asked
     WHERE w.id = asked.wallet_id AND w.id IN (SELECT id FROM locked)
       AND w.posted_micros - w.pending_micros >= asked.total
 RETURNING w.id AS wallet_id
), hold AS (
    INSERT INTO billing_hold (id, wallet_id, api_key_id, price_id, model, amount_micros,
                              charged_micros, status, created_at, expires_at)
    SELECT item.hold_id, item.wallet_id, item.api_key_id, item.price_id, item.model,
           item.amount_micros, 0, 'pending', item.created_at, item.expires_at
      FROM item JOIN wallet USING (wallet_id)
 RETURNING id
), budget AS (
    -- A cap one of them would pass fails the whole statement: they all try alone then.
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros + k.total,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM (SELECT item.api_key_id, sum(item.amount_micros) AS total
              FROM item JOIN wallet USING (wallet_id)
             GROUP BY item.api_key_id) AS k
     WHERE b.api_key_id = k.api_key_id
), member AS (
    UPDATE billing_memberbudget AS m
       SET pending_micros = m.pending_micros + t.total,
           month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM (SELECT k.organization_id, k.user_id, sum(item.amount_micros) AS total
              FROM item JOIN wallet USING (wallet_id)
              JOIN accounts_apikey AS k ON k.id = item.api_key_id
             WHERE NOT k.service AND k.organization_id IS NOT NULL
             GROUP BY k.organization_id, k.user_id) AS t
     WHERE m.organization_id = t.organization_id AND m.user_id = t.user_id
)
SELECT id, set_config('synchronous_commit', 'off', true) FROM hold
"""

RESOLVE_SQL = """
WITH hold AS (
    UPDATE billing_hold
       SET status = %(status)s, charged_micros = LEAST(%(cost)s, amount_micros),
           resolved_at = now()
     WHERE id = %(hold_id)s AND status = 'pending'
 RETURNING id, wallet_id, amount_micros, charged_micros, api_key_id, price_id, model
), usage AS (
    INSERT INTO billing_usagerecord (request_id, user_id, organization_id, api_key_id, model,
                                     worker,
                                     prompt_tokens, completion_tokens, cached_tokens,
                                     cache_write_tokens, endpoint,
                                     cost_micros, upstream_cost_micros, price_id, source,
                                     estimate_reason, over_cap, over_hold, status, latency_ms,
                                     ttft_ms, created_at)
    SELECT hold.id, coalesce(k.user_id, owner.user_id), owner.organization_id,
           hold.api_key_id, hold.model, %(worker)s,
           %(prompt_tokens)s, %(completion_tokens)s, %(cached_tokens)s,
           %(cache_write_tokens)s, %(endpoint)s,
           hold.charged_micros, %(upstream_cost)s::bigint, hold.price_id, %(source)s,
           %(estimate_reason)s, %(over_cap)s,
           %(cost)s > hold.amount_micros, %(usage_status)s, %(latency_ms)s, %(ttft_ms)s, now()
      FROM hold JOIN billing_wallet AS owner ON owner.id = hold.wallet_id  -- not locked
      LEFT JOIN accounts_apikey AS k ON k.id = hold.api_key_id
 RETURNING 1
), wallet AS (
    -- The usage record is written before the wallet is locked (see the module's
    -- docstring): this reads it, so it is in first.
    UPDATE billing_wallet AS w
       SET pending_micros = w.pending_micros - hold.amount_micros,
           posted_micros = w.posted_micros - hold.charged_micros,
           updated_at = now()
      FROM hold
     WHERE w.id = hold.wallet_id AND (SELECT count(*) FROM usage) >= 0
 RETURNING w.id, w.user_id, w.organization_id, w.posted_micros
), entry AS (
    INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, balance_after_micros,
                                     idempotency_key, memo, hold_id, created_at)
    SELECT wallet.id, 'charge', -hold.charged_micros, wallet.posted_micros,
           'charge:' || hold.id, hold.model || ' request ' || hold.id, hold.id,
           clock_timestamp()
      FROM hold, wallet
     WHERE hold.charged_micros > 0
), budget AS (
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros - hold.amount_micros,
           spent_micros = b.spent_micros + hold.charged_micros,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END + hold.charged_micros,
           month = %(month)s
      FROM hold JOIN wallet ON wallet.id = hold.wallet_id  -- the lock order
     WHERE b.api_key_id = hold.api_key_id
), member AS (
    UPDATE billing_memberbudget AS m
       SET pending_micros = m.pending_micros - hold.amount_micros,
           spent_micros = m.spent_micros + hold.charged_micros,
           month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                     ELSE 0 END + hold.charged_micros,
           month = %(month)s
      FROM hold JOIN wallet ON wallet.id = hold.wallet_id  -- the lock order
      JOIN accounts_apikey AS k ON k.id = hold.api_key_id
     WHERE NOT k.service AND m.organization_id = k.organization_id AND m.user_id = k.user_id
)
SELECT charged_micros FROM hold
"""

# Many settles and voids: every hold is locked (its UPDATE) before any wallet, each wallet
# moves once by its holds' sums, and each charge's ledger entry carries the balance after
# it, the charges of one wallet taken in the order of ``ord``.
RESOLVE_MANY_SQL = """
WITH item AS (
    SELECT * FROM json_to_recordset(%(items)s::json)
        AS r(ord int, hold_id text, status text, cost bigint, worker text,
             prompt_tokens int, completion_tokens int, cached_tokens int,
             cache_write_tokens int, endpoint text, source text,
             estimate_reason text, over_cap boolean, usage_status text, latency_ms int,
             ttft_ms int, upstream_cost_micros bigint, created_at timestamptz)
), hold AS (
    UPDATE billing_hold AS h
       SET status = item.status, charged_micros = LEAST(item.cost, h.amount_micros),
           resolved_at = now()
      FROM item
     WHERE h.id = item.hold_id AND h.status = 'pending'
 RETURNING h.id, h.wallet_id, h.amount_micros, h.charged_micros, h.api_key_id, h.price_id,
           h.model, item.ord
), usage AS (
    INSERT INTO billing_usagerecord (request_id, user_id, organization_id, api_key_id, model,
                                     worker,
                                     prompt_tokens, completion_tokens, cached_tokens,
                                     cache_write_tokens, endpoint,
                                     cost_micros, upstream_cost_micros, price_id, source,
                                     estimate_reason, over_cap, over_hold, status, latency_ms,
                                     ttft_ms, created_at)
    SELECT hold.id, coalesce(k.user_id, owner.user_id), owner.organization_id,
           hold.api_key_id, hold.model, item.worker,
           item.prompt_tokens, item.completion_tokens, item.cached_tokens,
           item.cache_write_tokens, item.endpoint,
           hold.charged_micros, item.upstream_cost_micros, hold.price_id, item.source,
           item.estimate_reason,
           item.over_cap, item.cost > hold.amount_micros, item.usage_status,
           item.latency_ms, item.ttft_ms, now()
      FROM hold JOIN item ON item.ord = hold.ord
      JOIN billing_wallet AS owner ON owner.id = hold.wallet_id  -- not locked: who owns it
      LEFT JOIN accounts_apikey AS k ON k.id = hold.api_key_id
     ORDER BY hold.ord
 RETURNING 1
), moved AS (
    SELECT wallet_id, sum(amount_micros) AS held, sum(charged_micros) AS charged
      FROM hold GROUP BY wallet_id
), locked AS (
    -- The usage records are written before any wallet is locked (see the module's
    -- docstring): this reads them, so they are all in first.
    SELECT w.id FROM billing_wallet AS w
     WHERE w.id IN (SELECT wallet_id FROM moved)
       AND (SELECT count(*) FROM usage) >= 0
     ORDER BY w.id FOR NO KEY UPDATE
), wallet AS (
    UPDATE billing_wallet AS w
       SET pending_micros = w.pending_micros - moved.held,
           posted_micros = w.posted_micros - moved.charged,
           updated_at = now()
      FROM moved
     WHERE w.id = moved.wallet_id AND w.id IN (SELECT id FROM locked)
 RETURNING w.id, w.user_id, w.organization_id, w.posted_micros, moved.charged
), entry AS (
    INSERT INTO billing_ledgerentry (wallet_id, kind, amount_micros, balance_after_micros,
                                     idempotency_key, memo, hold_id, created_at)
    SELECT wallet.id, 'charge', -hold.charged_micros,
           wallet.posted_micros + wallet.charged
               - sum(hold.charged_micros) OVER (PARTITION BY hold.wallet_id
                                                ORDER BY hold.ord),
           'charge:' || hold.id, hold.model || ' request ' || hold.id, hold.id,
           clock_timestamp()
      FROM hold JOIN wallet ON wallet.id = hold.wallet_id
     WHERE hold.charged_micros > 0
     ORDER BY hold.ord
), budget AS (
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros - k.held,
           spent_micros = b.spent_micros + k.charged,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END + k.charged,
           month = %(month)s
      FROM (SELECT hold.api_key_id, sum(hold.amount_micros) AS held,
                   sum(hold.charged_micros) AS charged
              FROM hold JOIN wallet ON wallet.id = hold.wallet_id  -- the lock order
             GROUP BY hold.api_key_id) AS k
     WHERE b.api_key_id = k.api_key_id
), member AS (
    UPDATE billing_memberbudget AS m
       SET pending_micros = m.pending_micros - t.held,
           spent_micros = m.spent_micros + t.charged,
           month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                     ELSE 0 END + t.charged,
           month = %(month)s
      FROM (SELECT k.organization_id, k.user_id, sum(hold.amount_micros) AS held,
                   sum(hold.charged_micros) AS charged
              FROM hold JOIN wallet ON wallet.id = hold.wallet_id  -- the lock order
              JOIN accounts_apikey AS k ON k.id = hold.api_key_id
             WHERE NOT k.service AND k.organization_id IS NOT NULL
             GROUP BY k.organization_id, k.user_id) AS t
     WHERE m.organization_id = t.organization_id AND m.user_id = t.user_id
)
SELECT ord, charged_micros FROM hold
"""

# A hold its request never used (the limits refused the request while its reservation was
# being taken alongside): deleted, its money given back, no usage record and no ledger entry
# written, as if it had never been taken; the request is counted as a refusal.
DISCARD_SQL = """
WITH hold AS (
    DELETE FROM billing_hold
     WHERE id = %(hold_id)s AND status = 'pending'
 RETURNING wallet_id, amount_micros, api_key_id
), wallet AS (
    UPDATE billing_wallet AS w
       SET pending_micros = w.pending_micros - hold.amount_micros, updated_at = now()
      FROM hold
     WHERE w.id = hold.wallet_id
 RETURNING w.id
), budget AS (
    UPDATE billing_keybudget AS b
       SET pending_micros = b.pending_micros - hold.amount_micros,
           month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM hold JOIN wallet ON wallet.id = hold.wallet_id  -- the lock order
     WHERE b.api_key_id = hold.api_key_id
), member AS (
    UPDATE billing_memberbudget AS m
       SET pending_micros = m.pending_micros - hold.amount_micros,
           month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                     ELSE 0 END,
           month = %(month)s
      FROM hold JOIN wallet ON wallet.id = hold.wallet_id  -- the lock order
      JOIN accounts_apikey AS k ON k.id = hold.api_key_id
     WHERE NOT k.service AND m.organization_id = k.organization_id AND m.user_id = k.user_id
)
SELECT count(*) FROM hold
"""

# RESERVE_SQL committing without waiting for the disk, while other reservations commit (see
# the module's docstring): DURABLE_SQL follows it.
RESERVE_BUSY_SQL = RESERVE_SQL.replace(
    "SELECT count(*) FROM hold",
    "SELECT count(*), set_config('synchronous_commit', 'off', true) FROM hold")

# ``created_since``: the oldest of the holds' creation times, when all are known (NULL
# otherwise), so that older months are not probed.
EXTEND_SQL = """
UPDATE billing_hold SET expires_at = %(expires_at)s
 WHERE id = ANY(%(hold_ids)s) AND status = 'pending' AND expires_at < %(expires_at)s
   AND created_at >= coalesce(%(created_since)s::timestamptz, '-infinity')
"""

WALLET_AVAILABLE_SQL = """
SELECT posted_micros - pending_micros, pending_micros FROM billing_wallet
 WHERE id = %(wallet_id)s
"""

# The wallet and, when the key has a budget row (and its owner one in the key's
# organization), what their caps leave (NULL: no such cap).
SPENDING_ROOM_SQL = """
SELECT w.posted_micros - w.pending_micros, w.pending_micros,
       b.lifetime_limit_micros - b.spent_micros - b.pending_micros,
       b.monthly_limit_micros - CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                     ELSE 0 END - b.pending_micros,
       coalesce(b.pending_micros, 0),
       m.lifetime_limit_micros - m.spent_micros - m.pending_micros,
       m.monthly_limit_micros - CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                     ELSE 0 END - m.pending_micros,
       coalesce(m.pending_micros, 0)
  FROM billing_wallet AS w
  LEFT JOIN billing_keybudget AS b ON b.api_key_id = %(api_key_id)s
  LEFT JOIN accounts_apikey AS k ON k.id = %(api_key_id)s AND NOT k.service
  LEFT JOIN billing_memberbudget AS m
         ON m.organization_id = k.organization_id AND m.user_id = k.user_id
 WHERE w.id = %(wallet_id)s
"""

BUDGET_SQL = """
SELECT lifetime_limit_micros, monthly_limit_micros, spent_micros, pending_micros, month,
       month_spent_micros
  FROM billing_keybudget WHERE api_key_id = %(api_key_id)s
"""

MEMBER_BUDGET_SQL = """
SELECT m.lifetime_limit_micros, m.monthly_limit_micros, m.spent_micros, m.pending_micros,
       m.month, m.month_spent_micros
  FROM billing_memberbudget AS m
  JOIN accounts_apikey AS k ON m.organization_id = k.organization_id AND m.user_id = k.user_id
 WHERE k.id = %(api_key_id)s AND NOT k.service
"""


# The same settles, for holds whose creation time the router knows (it reserved them): the
# hold's month is named, and PostgreSQL touches that partition only (at planning, or at
# executor start for a prepared generic plan).
_ONE_HOLD = "     WHERE id = %(hold_id)s AND status = 'pending'\n"
_MANY_HOLDS = "     WHERE h.id = item.hold_id AND h.status = 'pending'\n"
assert RESOLVE_SQL.count(_ONE_HOLD) == 1
assert RESOLVE_MANY_SQL.count(_MANY_HOLDS) == 1
assert DISCARD_SQL.count(_ONE_HOLD) == 1
RESOLVE_AT_SQL = RESOLVE_SQL.replace(
    _ONE_HOLD, "     WHERE id = %(hold_id)s AND created_at = %(created_at)s"
               " AND status = 'pending'\n")
# Each hold by its own time, and the statement's range of times as parameters, which the
# planner prunes on (a join's values it cannot).
RESOLVE_MANY_AT_SQL = RESOLVE_MANY_SQL.replace(
    _MANY_HOLDS, "     WHERE h.id = item.hold_id AND h.created_at = item.created_at\n"
                 "       AND h.created_at BETWEEN %(created_min)s AND %(created_max)s\n"
                 "       AND h.status = 'pending'\n")
DISCARD_AT_SQL = DISCARD_SQL.replace(
    _ONE_HOLD, "     WHERE id = %(hold_id)s AND created_at = %(created_at)s"
               " AND status = 'pending'\n")

# After a reservation that committed without waiting for the disk (see the module's
# docstring): a transaction of its own that writes a WAL record (a logical decoding
# message, which nothing reads unless a logical replication slot asks for messages) and so
# waits at its commit for the WAL to reach the disk, up to and past the reservation's
# commit. A transaction that only took an id writes no WAL before its commit record and
# would not wait.
DURABLE_SQL = "SELECT pg_logical_emit_message(true, 'binom_router', 'durable')"

# The PostgreSQL type of each named parameter of these statements (``wire.Statement``
# prepares them with it): one name, one type, in every statement.
PARAMETER_TYPES = {
    **dict.fromkeys(("amount", "api_key_id", "cached_tokens", "cache_write_tokens",
                     "completion_tokens", "cost", "latency_ms", "price_id", "prompt_tokens",
                     "ttft_ms", "upstream_cost", "wallet_id"), "int8"),
    **dict.fromkeys(("endpoint", "estimate_reason", "hold_id", "items", "model", "source",
                     "status", "usage_status", "worker"), "text"),
    **dict.fromkeys(("created_at", "created_max", "created_min", "created_since",
                     "expires_at"), "timestamptz"),
    "hold_ids": "text[]",
    "month": "date",
    "over_cap": "bool",
}
