"""The CSV exports through PostgreSQL's COPY write the same bytes as the Python rows they
replace (which SQLite keeps), on data chosen to break a formatter: text with commas,
quotes, line breaks and formula prefixes, unicode, empty strings, NULLs, every status and
endpoint, organizations' rows, negative amounts, timestamps with and without a fraction."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.urls import reverse

from accounts.models import ApiKey, User
from accounts.services import api_key_create
from billing.models import LedgerEntry, ModelPrice, UsageRecord, Wallet
from billing.selectors import UsageFilters, usage_records_of
from billing.selectors.organization_usage import organization_usage_records
from billing.selectors.statements import ledger_month, statement, statement_entries
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from organizations.models import Organization
from organizations.services import organization_create, organization_key_create
from portal import csv_copy, statement_csv
from portal.api.views import usage as api_usage_views
from portal.csv_copy import copy_csv_lines, copy_sql
from portal.csv_export import spreadsheet_safe, usage_csv_response
from portal.views import usage as usage_views
from portal.views.organizations import usage as org_usage_views

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="COPY is PostgreSQL's"),
]

# Every character a CSV writer or a spreadsheet treats specially, alone and in company.
ODD_TEXT = ["plain", "with,comma", 'with "quotes"', 'a "" pair', "line\nbreak",
            "carriage\rreturn", "both\r\nends", "=SUM(A1:A9)", "+1", "-1", "@cmd", "\tTab",
            "\rCR first", "\nLF first", "ünïcödé 模型 🚀", " leading space", "trailing ",
            "'", '"', ",", "", "back\\slash", "\\.", "semi;colon", "=", "-"]
TIMES = [datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC),
         datetime(2026, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC),
         datetime(2025, 12, 31, 12, 30, 0, 1, tzinfo=UTC),
         datetime(2026, 1, 15, 8, 5, 9, 250_000, tzinfo=UTC)]
COSTS = [0, 1, 999_999, 1_000_000, 1_000_001, 123_456_789_012]
_ids = itertools.count(1)


def drain(lines: AsyncIterator[str] | AsyncIterator[bytes]) -> bytes:
    """The whole export, read the way the ASGI server reads it (chunk by chunk)."""

    async def read() -> bytes:
        parts = []
        async for part in lines:
            parts.append(part.encode() if isinstance(part, str) else part)
        return b"".join(parts)

    return async_to_sync(read)()


def body(response) -> bytes:
    return drain(response.streaming_content)


def _records(user: User, price: ModelPrice, keys: list[ApiKey | None],
             organization_id: int | None = None) -> None:
    statuses, endpoints = UsageRecord.Status.values, UsageRecord.Endpoint.values
    sources = UsageRecord.Source.values
    rows = []
    for index, model in enumerate(ODD_TEXT * 2):
        prompt = 100 + index
        rows.append(UsageRecord(
            request_id=f"req-{next(_ids)}", user=user, organization_id=organization_id,
            api_key=keys[index % len(keys)], model=model, price=price,
            prompt_tokens=prompt, completion_tokens=index * 7, cached_tokens=index % 3,
            cache_write_tokens=index % 2, cost_micros=COSTS[index % len(COSTS)],
            upstream_cost_micros=None if index % 3 == 0 else index,
            status=statuses[index % len(statuses)], endpoint=endpoints[index % len(endpoints)],
            source=sources[index % len(sources)],
            latency_ms=None if index % 4 == 0 else index * 11,
            ttft_ms=None if index % 5 == 0 else index))
    created = UsageRecord.objects.bulk_create(rows)
    for index, record in enumerate(created):  # created_at is stamped on insert
        UsageRecord.objects.filter(pk=record.pk).update(created_at=TIMES[index % len(TIMES)])


@pytest.fixture
def person(make_user, price) -> User:
    person = make_user(email="person@example.com")
    keys: list[ApiKey | None] = [None]
    for name in ODD_TEXT[:12]:
        keys.append(api_key_create(user=person, name=name).api_key)
    _records(person, price, keys)
    return person


def _python_and_copy(header, records, row, columns) -> tuple[bytes, bytes]:
    python = body(usage_csv_response(header=header, records=records, row=row,
                                     filename="x.csv"))
    copied = body(usage_csv_response(header=header, records=records, row=row,
                                     columns=columns, filename="x.csv"))
    return python, copied


def test_a_persons_export_is_the_python_rows_byte_for_byte(person):
    records = usage_records_of(user=person)
    python, copied = _python_and_copy(usage_views.CSV_HEADER, records, usage_views._row,
                                      usage_views.CSV_SQL_ROW)

    assert copied == python
    assert python.count(b"\r\n") > len(ODD_TEXT) * 2  # a row each, and their line breaks
    assert b"'=SUM(A1:A9)" in copied
    assert b"'@cmd" in copied
    assert b'"\'\rCR first"' in copied
    assert "ünïcödé 模型 🚀".encode() in copied


@pytest.mark.parametrize("filters", [
    UsageFilters(model="with,comma"), UsageFilters(model="line\nbreak"),
    UsageFilters(status="upstream_error"), UsageFilters(endpoint="messages"),
    UsageFilters(since=datetime(2026, 1, 1, tzinfo=UTC), until=datetime(2026, 1, 31, tzinfo=UTC)),
    UsageFilters(model="no such model"),
])
def test_every_filter_narrows_both_paths_alike(person, filters):
    records = usage_records_of(user=person, filters=filters)
    python, copied = _python_and_copy(usage_views.CSV_HEADER, records, usage_views._row,
                                      usage_views.CSV_SQL_ROW)

    assert copied == python
    assert copied.count(b"\n") >= 1  # at least the header
    assert copied.startswith(b"time_utc,request_id,endpoint,model,")


def test_a_key_filter_reads_only_that_keys_rows(person):
    key = ApiKey.objects.filter(user=person).order_by("pk")[3]
    records = usage_records_of(user=person, filters=UsageFilters(api_key_id=key.pk))
    python, copied = _python_and_copy(usage_views.CSV_HEADER, records, usage_views._row,
                                      usage_views.CSV_SQL_ROW)

    assert copied == python
    assert copied.count(key.prefix.encode()) == records.count() > 0


def test_the_portal_view_streams_the_copy_with_the_pages_filters(client, person):
    client.force_login(person)

    with mock.patch("portal.csv_copy._copy_chunks", wraps=csv_copy._copy_chunks) as copy:
        response = client.get(reverse("portal:usage_csv"), {"status": "cancelled"})
        streamed = body(response)

    copy.assert_called_once()

    expected = body(usage_csv_response(
        header=usage_views.CSV_HEADER, row=usage_views._row, filename="x.csv",
        records=usage_records_of(user=person, filters=UsageFilters(status="cancelled"))))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert streamed == expected
    assert expected.count(b",cancelled,") == UsageRecord.objects.filter(
        user=person, status="cancelled").count() > 0


def test_the_apis_export_is_the_python_rows_byte_for_byte(person):
    records = usage_records_of(user=person)
    python, copied = _python_and_copy(api_usage_views.CSV_COLUMNS, records,
                                      api_usage_views._csv_row, api_usage_views.CSV_SQL_ROW)

    assert copied == python
    assert b",123456.789012,123456789012," in copied  # the cost in USD, then in micros


def test_an_empty_selection_is_the_header_alone(person):
    records = UsageRecord.objects.none()
    python, copied = _python_and_copy(usage_views.CSV_HEADER, records, usage_views._row,
                                      usage_views.CSV_SQL_ROW)

    assert copy_sql(records, usage_views.CSV_SQL_ROW) is None
    assert copied == python == (",".join(usage_views.CSV_HEADER) + "\r\n").encode()


def test_an_organizations_export_is_the_python_rows_byte_for_byte(make_user, price):
    owner = make_user(email="owner@example.com")
    organization = organization_create(name="=Evil, \"Co\"", owner=owner)
    keys: list[ApiKey | None] = [
        organization_key_create(organization=organization, actor=owner, name=name).api_key
        for name in ("-rm", "ok", "a\nb")]
    _records(owner, price, keys, organization_id=organization.pk)

    records = organization_usage_records(organization=organization)
    python, copied = _python_and_copy(org_usage_views.CSV_HEADER, records,
                                      org_usage_views.csv_row, org_usage_views.CSV_SQL_ROW)

    assert copied == python
    assert copied.count(b"owner@example.com") == len(ODD_TEXT) * 2


def test_the_organization_apis_export_streams_the_copy(make_user, price, client):
    owner = make_user(email="owner@example.com")
    organization = organization_create(name="Team", owner=owner)
    key = organization_key_create(organization=organization, actor=owner, name="@k").api_key
    _records(owner, price, [key, None], organization_id=organization.pk)
    client.force_login(owner)

    with mock.patch("portal.csv_copy._copy_chunks", wraps=csv_copy._copy_chunks) as copy:
        response = client.get(f"/api/orgs/{organization.pk}/usage", {"format": "csv"})
        streamed = body(response)

    copy.assert_called_once()
    assert streamed == body(usage_csv_response(
        header=org_usage_views.CSV_HEADER, row=org_usage_views.csv_row, filename="x.csv",
        records=organization_usage_records(organization=organization)))
    assert streamed.count(b",'@k,") == len(ODD_TEXT)


def _at(moment: datetime) -> contextlib.AbstractContextManager:
    return mock.patch("django.utils.timezone.now", return_value=moment)


@pytest.fixture
def ledger(make_user, staff, price) -> Wallet:
    """A month (January 2026) of odd entries in a person's wallet and an organization's."""
    person = make_user(email="ledger@example.com")
    organization = organization_create(name="@Org, \"quoted\"\nnewline", owner=person)
    org_wallet = Wallet.objects.get(organization=organization)
    january = [moment for moment in TIMES if moment.month == 1]
    for index, memo in enumerate(ODD_TEXT):
        with _at(january[index % len(january)]):
            wallet_credit(user=person, amount_micros=COSTS[index % len(COSTS)] or 5,
                          memo=memo, idempotency_key=f"{memo or 'k'}-{index}", kind="topup",
                          created_by=staff if index % 2 else None)
            wallet_credit(wallet=org_wallet, amount_micros=-1 if index % 3 else 3_000_001,
                          memo=memo, idempotency_key=f"org{index}{memo}", kind="adjustment")
    for index, model in enumerate(ODD_TEXT[:10]):
        with _at(january[index % len(january)]):
            hold_create(user=person, hold_id=f"=hold,{index}", amount_micros=10_000,
                        price=price, model=model)
            hold_settle(hold_id=f"=hold,{index}",
                        usage=UsageReport(prompt_tokens=10 + index, completion_tokens=index))
    return Wallet.objects.get(user=person)


def test_a_statement_is_the_python_rows_byte_for_byte(ledger):
    month = date(2026, 1, 1)
    shown = statement(wallet=ledger, month=month)
    entries = statement_entries(wallet=ledger, month=month)

    python = drain(statement_csv.statement_csv_lines(statement=shown, entries=entries,
                                                     sql=False))
    copied = drain(statement_csv.statement_csv_lines(statement=shown, entries=entries))

    assert copied == python
    assert b"opening_balance" in copied.splitlines()[1]
    assert b"closing_balance" in copied.splitlines()[-1]
    assert copied.count(b",charge,") == 10


def test_the_months_ledger_is_the_python_rows_byte_for_byte(ledger):
    entries = ledger_month(month=date(2026, 1, 1))
    kwargs = {"header": statement_csv.LEDGER_HEADER, "entries": entries,
              "row": statement_csv._ledger_row, "columns": statement_csv.LEDGER_SQL_ROW}

    python = drain(statement_csv.csv_lines(**kwargs, sql=False))
    copied = drain(statement_csv.csv_lines(**kwargs))

    assert copied == python
    assert b"-0.000001" in copied  # a negative amount, exact
    organization = Organization.objects.get(name__startswith="@Org")
    holder = f"organization {organization.pk}: {spreadsheet_safe(organization.name)}"
    assert copied.count(f'"{holder.replace(chr(34), 2 * chr(34))}"'.encode()) == len(ODD_TEXT)


def test_the_admin_export_streams_the_copy(admin_client, ledger):
    with mock.patch("portal.csv_copy._copy_chunks", wraps=csv_copy._copy_chunks) as copy:
        response = admin_client.get(reverse("admin:billing_ledgerentry_export"),
                                    {"month": "2026-01"})
        streamed = body(response)

    copy.assert_called_once()

    expected = drain(statement_csv.csv_lines(
        header=statement_csv.LEDGER_HEADER, entries=ledger_month(month=date(2026, 1, 1)),
        row=statement_csv._ledger_row, columns=statement_csv.LEDGER_SQL_ROW, sql=False))
    assert streamed == expected
    assert expected.count(b"\r\n") > LedgerEntry.objects.count()


def test_the_rows_come_in_chunks_of_bounded_size(person):
    records = usage_records_of(user=person)
    chunks = []

    async def read() -> None:
        async for chunk in copy_csv_lines(header=usage_views.CSV_HEADER, records=records,
                                          columns=usage_views.CSV_SQL_ROW, chunk_bytes=512):
            chunks.append(chunk)

    async_to_sync(read)()

    assert len(chunks) > 3
    # A chunk ends where a row does and holds at most one row past the bound.
    assert all(chunk.endswith(b"\r\n") for chunk in chunks)
    assert max(len(chunk) for chunk in chunks[1:]) < 512 + 400
    assert b"".join(chunks) == _python_and_copy(usage_views.CSV_HEADER, records,
                                                usage_views._row, usage_views.CSV_SQL_ROW)[0]
    assert connection.vendor == "postgresql"
