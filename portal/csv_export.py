"""Usage records as a CSV download, for the portal's page and the self-service API alike.

Streamed from an async iterator: the ASGI server then sends rows as the database yields
them in chunks, where a synchronous iterator would first be read whole into memory. On
PostgreSQL, callers that pass ``columns`` (the SQL twin of ``row``) get the rows formatted
by the database and streamed through COPY (portal.csv_copy), about ten times faster; the
Python ``row`` serves SQLite.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from django.db.models import Expression, QuerySet
from django.http import StreamingHttpResponse

from billing.models import UsageRecord
from portal.csv_copy import copy_csv_lines, copy_supported

CHUNK_SIZE = 1000


class _Line:
    """What csv.writer writes to: hands back each line instead of buffering it."""

    def write(self, line: str) -> str:
        return line


def spreadsheet_safe(value: str) -> str:
    """A cell starting with = + - @ is a formula to a spreadsheet; text a user chose (a key
    name) must not become one when the export is opened."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    writer = csv.writer(_Line())
    return [writer.writerow(header), *(writer.writerow(row) for row in rows)]


async def _lines(header: Sequence[str], records: QuerySet[UsageRecord],
                 row: Callable[[UsageRecord], Sequence[Any]]) -> AsyncIterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(header)
    async for record in records.aiterator(chunk_size=CHUNK_SIZE):
        yield writer.writerow(row(record))


def usage_csv_response(*, header: Sequence[str], records: QuerySet[UsageRecord],
                       row: Callable[[UsageRecord], Sequence[Any]],
                       filename: str,
                       columns: Sequence[Expression | str] | None = None
                       ) -> StreamingHttpResponse:
    """``row`` of each record, or on PostgreSQL ``columns`` (the same cells as SQL
    expressions, see portal.csv_copy) through COPY when given."""
    lines: AsyncIterator[str] | AsyncIterator[bytes]
    if columns is not None and copy_supported(records):
        lines = copy_csv_lines(header=header, records=records, columns=columns)
    else:
        lines = _lines(header, records, row)
    return StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "private, no-store"})
