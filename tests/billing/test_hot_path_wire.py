"""The request path's statements on the wire (``billing.services.hot_path.wire``): values
written in PostgreSQL's text format come back from a real server as they went, each
statement is prepared once per connection, and failures are psycopg's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, TypeVar

import psycopg
import pytest

from billing.models import UsageRecord
from billing.services.hot_path import wire
from billing.services.hot_path.connections import conninfo
from billing.services.hot_path.statements import PARAMETER_TYPES

T = TypeVar("T")

# The test database's name (and nothing of its data: these statements read none).
pytestmark = pytest.mark.usefixtures("db")


def on_connection(work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    async def run() -> T:
        conn = await psycopg.AsyncConnection.connect(conninfo(), autocommit=True,
                                                     client_encoding="UTF8")
        try:
            return await work(conn)
        finally:
            await conn.close()
    return asyncio.run(run())


async def one(conn: psycopg.AsyncConnection[Any], statement: wire.Statement,
              params: dict[str, object]) -> tuple[Any, ...]:
    return wire.rows(conn, await wire.run(conn, statement, params))[0]


def test_parameters_are_numbered_once_each_in_order_of_first_use() -> None:
    statement = wire.Statement("SELECT %(b)s, %(a)s, %(b)s", {"a": "int8", "b": "text"})

    assert statement.text == b"SELECT $1, $2, $1"
    assert statement.parameters == ("b", "a")
    assert statement.types == [25, 20]  # text, int8


def test_a_parameter_without_a_declared_type_or_another_placeholder_style_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        wire.Statement("SELECT %(nope)s", {"a": "int8"})
    with pytest.raises(ValueError, match="only %"):
        wire.Statement("SELECT %s", {})
    with pytest.raises(ValueError, match="only %"):
        wire.Statement("SELECT 'a%%'", {})
    with pytest.raises(ValueError, match="unknown PostgreSQL type"):
        wire.Statement("SELECT %(a)s", {"a": "int9"})


def test_values_a_statement_cannot_write_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="naive datetime"):
        wire.text(datetime(2026, 12, 7, 6, 0))  # noqa: DTZ001 (the naive one refused)
    with pytest.raises(TypeError, match="float"):
        wire.text(0.1)  # money is never a float, and nothing here takes one
    with pytest.raises(KeyError):
        wire.Statement("SELECT %(a)s", {"a": "int8"}).values({})


@pytest.mark.parametrize(("type_name", "value"), [
    ("int8", 0), ("int8", -1), ("int8", 9_223_372_036_854_775_807),
    ("int8", None),
    ("bool", True), ("bool", False),
    ("text", ""), ("text", "ascii"), ("text", "naïve — 漢字 🙂"),
    ("text", "quote ' and \" and \\ and {braces}, commas"),
    ("text", UsageRecord.Source.PROVIDER), ("int8", HTTPStatus.PAYMENT_REQUIRED),
    ("date", date(2026, 12, 1)),
    ("timestamptz", datetime(2026, 12, 7, 6, 5, 4, 123456, tzinfo=UTC)),
    ("timestamptz", datetime(2026, 12, 31, 23, 59, 59, 999999,
                             tzinfo=timezone(timedelta(hours=-5)))),
    ("text[]", ["req_1", 'a "quoted" one', "back\\slash", "", "NULL", "{x,y}", None]),
    ("text[]", []),
    ("int8[]", [1, -2, None]),
])
def test_a_value_comes_back_from_postgresql_as_it_went(type_name: str, value: object) -> None:
    statement = wire.Statement("SELECT %(v)s, %(v)s IS NULL", {"v": type_name})

    back, is_null = on_connection(lambda conn: one(conn, statement, {"v": value}))

    assert back == value
    assert is_null is (value is None)


def test_integer_boolean_text_and_other_columns_are_read_as_python_values() -> None:
    statement = wire.Statement(
        "SELECT 1::int2, 2::int4, 3::int8, true, 'x'::varchar, 'y'::char(2), 'z'::name,"
        " DATE '2026-12-01', 1.50::numeric, NULL::int8, pg_sleep(0)", {})

    row = on_connection(lambda conn: one(conn, statement, {}))

    assert row[:7] == (1, 2, 3, True, "x", "y ", "z")
    assert row[7] == date(2026, 12, 1)
    assert str(row[8]) == "1.50"  # psycopg's loader: a Decimal
    assert row[9] is None
    assert row[10] == ""  # void, a type without a loader: read as text, as psycopg does


def test_each_statement_is_prepared_once_per_connection() -> None:
    first = wire.Statement("SELECT %(a)s + 1", {"a": "int8"})
    second = wire.Statement("SELECT %(a)s + 2", {"a": "int8"})

    async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[list[int], list[Any]]:
        answers = [(await one(conn, statement, {"a": n}))[0]
                   for n in range(3) for statement in (first, second)]
        cursor = await conn.execute(
            "SELECT name, parameter_types::text[] FROM pg_prepared_statements"
            " ORDER BY name")
        return answers, await cursor.fetchall()

    answers, prepared = on_connection(work)

    assert answers == [1, 2, 2, 3, 3, 4]
    assert prepared == [(first.name.decode(), ["bigint"]), (second.name.decode(), ["bigint"])]


def test_a_failed_statement_raises_psycopgs_error_and_leaves_the_connection_usable() -> None:
    failing = wire.Statement(
        "SELECT * FROM (VALUES (1)) AS t(x) WHERE 1 / %(zero)s > 0", {"zero": "int8"})
    broken = wire.Statement("SELECT nothing_called_this", {})
    fine = wire.Statement("SELECT %(a)s", {"a": "int8"})

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[object]:
        seen: list[object] = []
        for statement, params in ((failing, {"zero": 0}), (broken, {})):
            try:
                await wire.run(conn, statement, params)
            except psycopg.Error as error:
                seen.append((type(error), error.diag.sqlstate))
        seen.append((await one(conn, fine, {"a": 7}))[0])
        return seen

    seen = on_connection(work)

    assert seen == [(psycopg.errors.DivisionByZero, "22012"),
                    (psycopg.errors.UndefinedColumn, "42703"), 7]


def test_a_cancelled_statement_is_cancelled_in_the_server_too() -> None:
    sleeping = wire.Statement("SELECT pg_sleep(%(s)s)", {"s": "int8"})
    fine = wire.Statement("SELECT %(a)s", {"a": "int8"})

    async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(wire.run(conn, sleeping, {"s": 30}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return loop.time() - started, (await one(conn, fine, {"a": 5}))[0]

    took, after = on_connection(work)

    assert took < 10  # not the statement's 30 s: the server stopped it
    assert after == 5


def test_every_parameter_of_the_request_paths_statements_has_a_type() -> None:
    from billing.services.hot_path import statements

    sql = [value for name, value in vars(statements).items() if name.endswith("_SQL")]
    assert len(sql) >= 10
    for text in sql:
        wire.Statement(text, PARAMETER_TYPES)  # raises for a parameter without one
