"""What every connection of the router sets for its session on PostgreSQL, whatever the
server's defaults: commits that wait for the disk, and transactions that read committed.

- **Commits wait for the disk.** Money is only as safe as its commit. A hold whose answer
  went out, a charge, a top-up must survive a crash of PostgreSQL, and the request path's
  wait for a hold's commit (``billing.services.hot_path.hold_commits``) only means
  something if that commit waited for the disk. A server, database or role set to
  ``synchronous_commit = off`` (a common tuning for write-heavy work) would make every
  commit return before it is on the disk: a crash a fraction of a second later forgets
  it. ``off`` is raised to ``local``: on this server's disk, without waiting for standbys,
  which ``off`` did not ask for either. Every setting that already waits for the disk
  (``local``, ``on``, ``remote_write``, ``remote_apply``) is left as it is, and a
  transaction may still turn waiting off for itself (``set_config(..., true)``), as the
  request path's grouped reservations do with a durable statement behind them.
- **Read committed.** Every statement that moves money is written for it: a reservation's
  ``UPDATE`` of a wallet that another has just moved waits for it and checks the balance
  again on the new row. Under a ``default_transaction_isolation`` of ``repeatable read``
  or ``serializable`` it fails instead ("could not serialize access due to concurrent
  update"): of 60 reservations at once on a wallet covering 33, 27 went through and the
  other 33 were answered 503, none of them 402.

Behind pgbouncer in transaction mode a session's settings do not follow its client: set
them on the server for the router's role there (``ALTER ROLE ... SET``).
"""

from __future__ import annotations

from typing import Any

# One round trip when a connection opens; nothing per statement.
SESSION_SQL = """
SELECT CASE WHEN current_setting('synchronous_commit') = 'off'
            THEN set_config('synchronous_commit', 'local', false) END,
       CASE WHEN current_setting('default_transaction_isolation') <> 'read committed'
            THEN set_config('default_transaction_isolation', 'read committed', false) END
"""


def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Django's ``connection_created``: the ORM's connections (top-ups, the admin's
    credits, the sweeper, the request path's ORM fallback) too."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(SESSION_SQL)
