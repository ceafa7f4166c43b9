"""Statements and the month's ledger as CSV: a wallet's statement (a person's or an
organization's; portal and admin alike) and every entry of a month for accounting (staff
only).

Amounts are USD with six decimals (micro-USD, exact), signed as in the ledger, so a column's
sum is the statement's movement. Streamed from an async iterator, as portal.csv_export
explains, because a month of the whole ledger (or of a busy wallet) is millions of rows: on
PostgreSQL formatted by the database and streamed through COPY (portal.csv_copy), with the
same bytes as the Python rows, which serve SQLite.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from typing import Any

from django.db.models import Case, Expression, QuerySet, TextField, Value, When
from django.db.models.functions import Cast, Concat
from django.http import StreamingHttpResponse

from billing.models import LedgerEntry
from billing.money import format_usd
from billing.selectors.statements import Statement
from portal.csv_copy import SafeText, Text, Usd, UtcIso, copy_csv_lines, copy_supported
from portal.csv_export import CHUNK_SIZE, spreadsheet_safe

STATEMENT_HEADER = ["time_utc", "entry_id", "kind", "model", "request_id", "memo",
                    "amount_usd", "balance_after_usd"]
LEDGER_HEADER = ["time_utc", "entry_id", "user", "kind", "model", "request_id", "amount_usd",
                 "balance_after_usd", "idempotency_key", "memo", "created_by"]
# The statement's bounds, as rows without an amount so that the amount column sums to the
# month's movement.
OPENING, CLOSING = "opening_balance", "closing_balance"


class _Line:
    def write(self, line: str) -> str:
        return line


def _model(entry: LedgerEntry) -> str:
    return spreadsheet_safe(entry.hold.model) if entry.hold is not None else ""


def _statement_row(entry: LedgerEntry) -> list[Any]:
    return [entry.created_at.isoformat(), entry.pk, entry.kind, _model(entry),
            entry.hold_id or "", spreadsheet_safe(entry.memo), format_usd(entry.amount_micros),
            format_usd(entry.balance_after_micros)]


def _holder(entry: LedgerEntry) -> str:
    # The column names whose wallet it is: a person's email, or an organization's name.
    wallet = entry.wallet
    if wallet.user_id is not None:
        return wallet.user.email
    return f"organization {wallet.organization_id}: {spreadsheet_safe(wallet.organization.name)}"


def _ledger_row(entry: LedgerEntry) -> list[Any]:
    return [entry.created_at.isoformat(), entry.pk, _holder(entry), entry.kind,
            _model(entry), entry.hold_id or "", format_usd(entry.amount_micros),
            format_usd(entry.balance_after_micros), spreadsheet_safe(entry.idempotency_key),
            spreadsheet_safe(entry.memo), entry.created_by.email if entry.created_by else ""]


# The rows above as SQL, for the COPY export (portal.csv_copy): cell for cell.
STATEMENT_SQL_ROW: tuple[Expression | str, ...] = (
    UtcIso("created_at"), "id", Text("kind"), SafeText("hold__model"), Text("hold_id"),
    SafeText("memo"), Usd("amount_micros"), Usd("balance_after_micros"))
_HOLDER_SQL = Case(
    When(wallet__user__isnull=False, then=Text("wallet__user__email")),
    default=Concat(Value("organization "), Cast("wallet__organization_id", TextField()),
                   Value(": "), SafeText("wallet__organization__name"),
                   output_field=TextField()),
    output_field=TextField())
LEDGER_SQL_ROW: tuple[Expression | str, ...] = (
    UtcIso("created_at"), "id", _HOLDER_SQL, Text("kind"), SafeText("hold__model"),
    Text("hold_id"), Usd("amount_micros"), Usd("balance_after_micros"),
    SafeText("idempotency_key"), SafeText("memo"), Text("created_by__email"))


async def _lines(header: Sequence[str], entries: QuerySet[LedgerEntry],
                 row: Callable[[LedgerEntry], Sequence[Any]],
                 first: Sequence[Sequence[Any]] = (),
                 last: Sequence[Sequence[Any]] = ()) -> AsyncIterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(header)
    for line in first:
        yield writer.writerow(line)
    async for entry in entries.aiterator(chunk_size=CHUNK_SIZE):
        yield writer.writerow(row(entry))
    for line in last:
        yield writer.writerow(line)


def csv_lines(*, header: Sequence[str], entries: QuerySet[LedgerEntry],
              row: Callable[[LedgerEntry], Sequence[Any]],
              columns: Sequence[Expression | str], first: Sequence[Sequence[Any]] = (),
              last: Sequence[Sequence[Any]] = (),
              sql: bool | None = None) -> AsyncIterator[str] | AsyncIterator[bytes]:
    """The export's lines: through COPY with ``columns`` when ``sql`` (by default, on
    PostgreSQL), else ``row`` of each entry in Python."""
    if sql is None:
        sql = copy_supported(entries)
    if sql:
        return copy_csv_lines(header=header, records=entries, columns=columns, first=first,
                              last=last)
    return _lines(header, entries, row, first, last)


def _response(lines: AsyncIterator[str] | AsyncIterator[bytes],
              filename: str) -> StreamingHttpResponse:
    return StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "private, no-store"})


def statement_csv_lines(*, statement: Statement, entries: QuerySet[LedgerEntry],
                        sql: bool | None = None) -> AsyncIterator[str] | AsyncIterator[bytes]:
    blank = [""] * 4
    opening = [statement.start.isoformat(), "", OPENING, *blank,
               format_usd(statement.opening_micros)]
    closing = [statement.end.isoformat(), "", CLOSING, *blank,
               format_usd(statement.closing_micros)]
    return csv_lines(header=STATEMENT_HEADER, entries=entries, row=_statement_row,
                     columns=STATEMENT_SQL_ROW, first=[opening], last=[closing], sql=sql)


def statement_csv_response(*, statement: Statement,
                           entries: QuerySet[LedgerEntry]) -> StreamingHttpResponse:
    filename = f"statement-{statement.month:%Y-%m}-{statement.holder_ref}.csv"
    return _response(statement_csv_lines(statement=statement, entries=entries), filename)


def ledger_csv_response(*, month: date, entries: QuerySet[LedgerEntry]) -> StreamingHttpResponse:
    return _response(csv_lines(header=LEDGER_HEADER, entries=entries, row=_ledger_row,
                               columns=LEDGER_SQL_ROW), f"ledger-{month:%Y-%m}.csv")
