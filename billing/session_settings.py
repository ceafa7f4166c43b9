"""What every connection of the router sets for its session on PostgreSQL: commits that
wait for the disk.

Money is only as safe as its commit. A hold whose answer went out, a charge, a top-up must
survive a crash of PostgreSQL, and the request path's wait for a hold's commit
(``billing.services.hot_path.hold_commits``) only means something if that commit waited
for the disk. A server, database or role set to ``synchronous_commit = off`` (a common
tuning for write-heavy work) would make every commit return before it is on the disk: a
crash a fraction of a second later forgets it. So each connection, the request path's pool
and Django's alike, raises ``off`` to ``local``: on this server's disk, without waiting for
standbys, which ``off`` did not ask for either. Every setting that already waits for the
disk (``local``, ``on``, ``remote_write``, ``remote_apply``) is left as it is, and a
transaction may still turn waiting off for itself (``set_config(..., true)``), as the
request path's grouped reservations do with a durable statement behind them.

Behind pgbouncer in transaction mode a session's settings do not follow its client: set it
on the server for the router's role there (``ALTER ROLE ... SET synchronous_commit = on``).
"""

from __future__ import annotations

from typing import Any

# One round trip when a connection opens; nothing per statement.
DURABLE_COMMITS_SQL = ("SELECT set_config('synchronous_commit', 'local', false)"
                       " WHERE current_setting('synchronous_commit') = 'off'")


def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Django's ``connection_created``: the ORM's connections (top-ups, the admin's
    credits, the sweeper, the request path's ORM fallback) commit to the disk too."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(DURABLE_COMMITS_SQL)
