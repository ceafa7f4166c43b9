"""Statements and the month's ledger as CSV: a wallet's statement (a person's or an
organization's; portal and admin alike) and every entry of a month for accounting (staff
only).

Amounts are USD with six decimals (micro-USD, exact), signed as in the ledger, so a column's
sum is the statement's movement. Streamed from an async iterator, as portal.csv_export
explains, because a month of the whole ledger is large.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from billing.models import LedgerEntry
from billing.money import format_usd
from billing.selectors.statements import Statement
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


def _response(lines: AsyncIterator[str], filename: str) -> StreamingHttpResponse:
    return StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "private, no-store"})


def statement_csv_response(*, statement: Statement,
                           entries: QuerySet[LedgerEntry]) -> StreamingHttpResponse:
    blank = [""] * 4
    opening = [statement.start.isoformat(), "", OPENING, *blank,
               format_usd(statement.opening_micros)]
    closing = [statement.end.isoformat(), "", CLOSING, *blank,
               format_usd(statement.closing_micros)]
    filename = f"statement-{statement.month:%Y-%m}-{statement.holder_ref}.csv"
    return _response(_lines(STATEMENT_HEADER, entries, _statement_row, [opening], [closing]),
                     filename)


def ledger_csv_response(*, month: date, entries: QuerySet[LedgerEntry]) -> StreamingHttpResponse:
    return _response(_lines(LEDGER_HEADER, entries, _ledger_row), f"ledger-{month:%Y-%m}.csv")
