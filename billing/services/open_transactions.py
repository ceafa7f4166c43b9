"""The start of the oldest transaction still open on the database: how far the jobs that
keep summaries beside a growing table (ledger days, usage roll-ups) may vouch for it.

A row stamped with its transaction's start (PostgreSQL's ``now()``), or inside the
transaction that writes it, and not yet committed, was stamped no earlier than that start;
so every row stamped before it that will ever exist is committed already.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection


def oldest_open_transaction() -> datetime | None:
    """When the oldest transaction open on this database (other than ours) started; None
    when there is none, or off PostgreSQL. A database role without pg_read_all_stats sees
    only its own role's sessions: the router's processes share one role."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT min(xact_start) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'""")
        return cursor.fetchone()[0]
