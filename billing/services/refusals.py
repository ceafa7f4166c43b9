"""Counting refused requests (``RefusedRequests``): many refusals, one statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from billing.models import RefusedRequests

# Rows per statement: well under SQLite's 32,766 parameters (10 per row).
CHUNK = 500


@dataclass(frozen=True)
class RefusalCount:
    """``count`` requests of one group (key, minute, status, reason, model, endpoint)."""

    user_id: int
    api_key_id: int
    minute: datetime
    status: int
    reason: str
    model: str
    endpoint: str
    count: int
    message: str
    last_request_id: str


def refusals_record(*, counts: Sequence[RefusalCount]) -> None:
    """Add ``counts`` to their groups, creating the groups that do not exist yet.

    One upsert per chunk: two router processes counting the same group add up, neither
    overwrites the other (ON CONFLICT adds to the row it finds, under its row lock)."""
    with transaction.atomic():
        for start in range(0, len(counts), CHUNK):
            chunk = counts[start:start + CHUNK]
            params: list[object] = []
            for item in chunk:
                params += [item.user_id, item.api_key_id,
                           connection.ops.adapt_datetimefield_value(item.minute), item.status,
                           item.reason, item.model[:200], item.endpoint, item.count,
                           item.message, item.last_request_id]
            with connection.cursor() as cursor:
                cursor.execute(_UPSERT.format(rows=", ".join([_ROW] * len(chunk))), params)


_TABLE = RefusedRequests._meta.db_table
_COLUMNS = ("user_id", "api_key_id", "minute", "status", "reason", "model", "endpoint", "count",
            "message", "last_request_id")
_ROW = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
# Table and columns are this module's own; only the number of row placeholders varies.
_UPSERT = (
    f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES {{rows}} "  # noqa: S608
    "ON CONFLICT (api_key_id, minute, status, reason, model, endpoint) "
    f"DO UPDATE SET count = {_TABLE}.count + excluded.count, "
    "message = excluded.message, last_request_id = excluded.last_request_id"
)
