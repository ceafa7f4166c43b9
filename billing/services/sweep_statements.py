"""The sweeper's SQL on PostgreSQL: a batch of expired holds resolved by four statements in
one transaction, whatever the batch's size.

They keep the rules of ``billing.services.holds._release`` (the reference, and what SQLite
runs): only a pending hold moves; it becomes ``expired`` with nothing charged; its wallet's
``pending_micros`` drops by its amount, and so do its key's budget's and, for a member's key
in an organization, the member's budget's, whose month rolls over exactly as
``budget_resolve`` rolls it (a release charges nothing, so ``spent`` stays).

Lock order, as on the request path: the hold rows (claimed first, ``SKIP LOCKED``), then the
wallet rows, then the key budget rows, then the member budget rows, each kind in id order.
Separate statements make the order a fact rather than a plan the executor may reorder. A
budget row is only ever locked under its wallet's lock (a key spends one wallet; a member
budget belongs to one organization's wallet), so two sweepers, or a sweeper and a request
path statement for many requests, queue on the wallets and never wait on each other in a
cycle.

Holds are named by ``(id, created_at)``, never ``id`` alone: the statements are the same
whether ``billing_hold`` is a plain table or partitioned by ``created_at``.
"""

from __future__ import annotations

# Claims up to ``batch`` pending holds past their expiry that nobody holds a lock on (a
# settle in flight keeps its hold; it finds it pending and wins), and expires them.
EXPIRE_SQL = """
WITH claimed AS (
    SELECT id, created_at FROM billing_hold
     WHERE status = 'pending' AND expires_at < %(now)s
     ORDER BY expires_at
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
)
UPDATE billing_hold AS h
   SET status = 'expired', charged_micros = 0, resolved_at = now()
  FROM claimed
 WHERE h.id = claimed.id AND h.created_at = claimed.created_at AND h.status = 'pending'
RETURNING h.id, h.wallet_id, h.amount_micros, h.api_key_id
"""

# ``released``: (wallet id, what its expired holds reserved), one row per wallet.
WALLETS_RELEASE_SQL = """
WITH released AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(amounts)s::bigint[]) AS r(wallet_id, held)
), locked AS (
    SELECT w.id FROM billing_wallet AS w
     WHERE w.id IN (SELECT wallet_id FROM released)
     ORDER BY w.id FOR NO KEY UPDATE
)
UPDATE billing_wallet AS w
   SET pending_micros = w.pending_micros - released.held, updated_at = now()
  FROM released
 WHERE w.id = released.wallet_id AND w.id IN (SELECT id FROM locked)
"""

# ``released``: (API key id, what its expired holds reserved), one row per key.
KEY_BUDGETS_RELEASE_SQL = """
WITH released AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(amounts)s::bigint[]) AS r(api_key_id, held)
), locked AS (
    SELECT b.id FROM billing_keybudget AS b
     WHERE b.api_key_id IN (SELECT api_key_id FROM released)
     ORDER BY b.id FOR NO KEY UPDATE
)
UPDATE billing_keybudget AS b
   SET pending_micros = b.pending_micros - released.held,
       month_spent_micros = CASE WHEN b.month = %(month)s THEN b.month_spent_micros
                                 ELSE 0 END,
       month = %(month)s
  FROM released
 WHERE b.api_key_id = released.api_key_id AND b.id IN (SELECT id FROM locked)
"""

# The same per key, summed per member budget: a member's own key in an organization (not a
# service key), as ``holds._member_budget`` finds it.
MEMBER_BUDGETS_RELEASE_SQL = """
WITH released AS (
    SELECT k.organization_id, k.user_id, sum(r.held) AS held
      FROM unnest(%(ids)s::bigint[], %(amounts)s::bigint[]) AS r(api_key_id, held)
      JOIN accounts_apikey AS k ON k.id = r.api_key_id
     WHERE NOT k.service AND k.organization_id IS NOT NULL
     GROUP BY k.organization_id, k.user_id
), locked AS (
    SELECT m.id FROM billing_memberbudget AS m
      JOIN released ON m.organization_id = released.organization_id
                   AND m.user_id = released.user_id
     ORDER BY m.id FOR NO KEY UPDATE OF m
)
UPDATE billing_memberbudget AS m
   SET pending_micros = m.pending_micros - released.held,
       month_spent_micros = CASE WHEN m.month = %(month)s THEN m.month_spent_micros
                                 ELSE 0 END,
       month = %(month)s
  FROM released
 WHERE m.organization_id = released.organization_id AND m.user_id = released.user_id
   AND m.id IN (SELECT id FROM locked)
"""
