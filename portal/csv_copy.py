"""CSV exports at the database's speed: on PostgreSQL the rows are formatted by the query
itself and streamed through ``COPY (SELECT ...) TO STDOUT WITH (FORMAT csv)``.

Formatting a row in Python (a model instance, then csv.writer) costs about 40 µs, so a
million-row export took most of a minute; PostgreSQL formats and quotes the same row in a
few microseconds. The columns are Django expressions over the caller's queryset, so the
filters, joins and order (and the indexes they use) stay those of the selector the page
lists, and each expression below mirrors a Python formatter exactly:

- ``UtcIso``: ``datetime.isoformat()`` of the UTC datetimes Django reads (``+00:00``, the
  fraction only when it is not zero);
- ``Usd``: ``billing.money.format_usd``, from integer micro-USD with integer arithmetic;
- ``SafeText``: ``portal.csv_export.spreadsheet_safe``;
- ``Text``: any text column.

The output is that of csv.writer byte for byte: PostgreSQL quotes the same characters
(delimiter, quote, CR, LF) the same way, an empty string goes out as NULL (COPY would quote
an empty string, csv.writer does not), and each row's LF becomes CRLF (COPY always ends a
row with LF; each of its data messages is exactly one row, so a LF inside a quoted value is
never touched).

The rows are read on Django's own connection, in the thread the request's other sync code
runs in (``thread_sensitive``), so they are what the request's transaction sees, and
streamed in chunks of ``CHUNK_BYTES``: memory stays flat whatever the number of rows. A
client that leaves midway closes the generator, and psycopg then cancels the COPY and
drains what the server had already sent, so the connection is left idle and usable.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Expression, F, Func, QuerySet, TextField

CHUNK_BYTES = 128 * 1024


class _Line:
    def write(self, line: str) -> str:
        return line


def copy_supported(records: QuerySet[Any]) -> bool:
    """Whether ``records`` can be exported through COPY (PostgreSQL); SQLite keeps the
    Python formatter."""
    return connections[records.db].vendor == "postgresql"


class _Format(Func):
    """An expression of one column, written as ``template_sql`` with ``{x}`` for the column
    (it may appear more than once: its parameters are repeated to match)."""

    template_sql = "{x}"
    output_field = TextField()

    def __init__(self, expression: str | Expression) -> None:
        super().__init__(F(expression) if isinstance(expression, str) else expression)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source_expressions[0])
        uses = self.template_sql.count("{x}")
        return self.template_sql.format(x=sql), list(params) * uses


class Text(_Format):
    """A text column; empty as NULL, so that COPY writes it unquoted, as csv.writer does."""

    template_sql = "NULLIF({x}, '')"


class SafeText(_Format):
    """``spreadsheet_safe``: a leading = + - @ TAB or CR gets a ' before it."""

    template_sql = ("CASE WHEN left({x}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) "
                    "THEN '''' || {x} ELSE NULLIF({x}, '') END")


class Usd(_Format):
    """``format_usd``: signed, six decimals, from integer micro-USD (never a float)."""

    template_sql = ("CASE WHEN {x} < 0 THEN '-' ELSE '' END || (abs({x}) / 1000000)::text "
                    "|| '.' || lpad(mod(abs({x}), 1000000)::text, 6, '0')")


class UtcIso(_Format):
    """``isoformat()`` of a timestamptz read as UTC: ``2026-03-01T12:00:00.250000+00:00``,
    without the fraction when it is zero."""

    # One to_char, then the zero fraction dropped: '.000000+' can only be the fraction.
    template_sql = ("replace(to_char({x} AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), '.000000+', '+')")


def copy_sql(records: QuerySet[Any], columns: Sequence[Expression | str]) -> str | None:
    """The ``COPY ... TO STDOUT`` statement of ``columns`` over ``records`` (its filters,
    joins and order), with its parameters bound; None when ``records`` is empty by
    construction (``.none()``). Needs the connection (to quote the parameters): call it in
    sync code."""
    names = [f"csv_{index}" for index in range(len(columns))]
    rows = records.annotate(**{
        name: F(column) if isinstance(column, str) else column
        for name, column in zip(names, columns, strict=True)}).values_list(*names)
    connection = connections[records.db]
    try:
        sql, params = rows.query.get_compiler(using=records.db).as_sql()
    except EmptyResultSet:
        return None
    select = connection.ops.compose_sql(sql, params)
    return f"COPY ({select}) TO STDOUT WITH (FORMAT csv)"


def _copy_chunks(alias: str, records: QuerySet[Any], columns: Sequence[Expression | str],
                 chunk_bytes: int) -> Iterator[bytes]:
    """The rows as CSV, ``chunk_bytes`` or so at a time. Closing the generator midway
    cancels the COPY (psycopg's Copy.__exit__ on an exception)."""
    statement = copy_sql(records, columns)
    if statement is None:
        return
    connection = connections[alias]
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        chunk = bytearray()
        for row in copy:  # one data message per row, ending with LF
            chunk += row[:-1]
            chunk += b"\r\n"
            if len(chunk) >= chunk_bytes:
                yield bytes(chunk)
                chunk.clear()
        if chunk:
            yield bytes(chunk)


def csv_text(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows written by csv.writer (a header, a statement's opening line)."""
    writer = csv.writer(_Line())
    return "".join(writer.writerow(row) for row in rows).encode()


async def copy_csv_lines(*, header: Sequence[str], records: QuerySet[Any],
                         columns: Sequence[Expression | str],
                         first: Sequence[Sequence[Any]] = (),
                         last: Sequence[Sequence[Any]] = (),
                         chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """``header``, the ``first`` rows, ``columns`` of every record, then the ``last`` rows,
    as CSV in chunks (an async iterator: under ASGI the response is sent as it is read)."""
    yield csv_text([header, *first])
    chunks = _copy_chunks(records.db, records, columns, chunk_bytes)
    # thread_sensitive: the request's thread, whose connection the view used; one chunk
    # per hop, so the hops cost nothing next to the rows.
    pull = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await pull(chunks, None)) is not None:
            yield chunk
    finally:
        # A client that left: cancel the COPY now rather than when the generator is
        # collected, so the connection is idle again before the request ends.
        await sync_to_async(chunks.close, thread_sensitive=True)()
    if last:
        yield csv_text(last)
