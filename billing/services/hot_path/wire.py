"""The request path's statements on the wire: prepared once per connection, their
parameters written and their rows read here, without psycopg's cursor.

A statement through ``AsyncConnection.execute`` cost about 104 us of the router's CPU, 65
us sent this way (``SELECT $1 + $2`` one by one under uvloop, the median of six runs of
4,000): the cursor, its transformer, the prepared-statement cache's keys and the dumpers
chosen per value were a third of it, for the same bytes on the wire. A few statements,
known in advance, run on every request; this module does for them only what they need.

- **Parameters** are named as in psycopg (``%(name)s``) and numbered here once per
  statement. Each name has one PostgreSQL type, declared in ``PARAMETER_TYPES``: the
  statement is prepared with those types, so ``None`` is a typed NULL and a value's size
  never asks for another preparation, and PostgreSQL needs no context to infer them.
- **Values** go in PostgreSQL's text format: ``int`` and ``bool`` as numbers and ``t``/
  ``f``, ``str`` as UTF-8 (the connections say ``client_encoding`` UTF8), an aware
  ``datetime`` and a ``date`` in ISO 8601, a list as an array literal. Anything else, or
  a naive ``datetime``, is refused with ``TypeError`` before anything is sent.
- **Rows** are tuples; integer, boolean and text columns are read here, any other type by
  psycopg's own loader for it.
- **Errors** are psycopg's: a failed statement raises the ``psycopg.errors`` class of its
  SQLSTATE with its diagnostics (``CheckViolation``, ``UniqueViolation``), a lost
  connection ``OperationalError``, and a cancelled wait cancels the statement in the
  server (``AsyncConnection.wait``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Generator, Mapping
from datetime import date, datetime
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from psycopg import errors, generators, postgres, pq

_NAMED = re.compile(r"%\((\w+)\)s")
_names = itertools.count(1)

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_TEXT = pq.Format.TEXT
_INVALID_OID = 0  # what psycopg asks a loader of for a type it does not know


class Statement:
    """One SQL statement with ``%(name)s`` parameters, as the server is given it."""

    __slots__ = ("name", "parameters", "text", "types")

    def __init__(self, sql: str, types: Mapping[str, str]) -> None:
        if "%" in _NAMED.sub("", sql):
            raise ValueError("only %(name)s parameters are supported: no %s, no %%")
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in order:
                order.append(match[1])
            return f"${order.index(match[1]) + 1}"

        self.text = _NAMED.sub(number, sql).encode()
        self.parameters = tuple(order)
        unknown = [name for name in order if name not in types]
        if unknown:
            raise ValueError(f"no type declared for the parameters {unknown}")
        self.types = [_oid(types[name]) for name in order]
        self.name = f"router_hot_{next(_names)}".encode()

    def values(self, params: Mapping[str, object]) -> list[bytes | None]:
        return [text(params[name]) for name in self.parameters]


def _oid(type_name: str) -> int:
    base = type_name.removesuffix("[]")
    info = postgres.types.get(base)
    if info is None:
        raise ValueError(f"unknown PostgreSQL type {type_name!r}")
    return info.array_oid if base != type_name else info.oid


def text(value: object) -> bytes | None:
    """``value`` in PostgreSQL's text format (None: NULL)."""
    if value is None:
        return None
    kind = type(value)
    if kind is int:
        return b"%d" % value  # type: ignore[str-format]
    if kind is str:
        return value.encode()  # type: ignore[attr-defined]
    if kind is bool:
        return b"t" if value else b"f"
    # Subclasses (Django's choices, enums) by their value, as the exact types are.
    if isinstance(value, int):
        return b"%d" % int(value)
    if isinstance(value, str):
        return str.encode(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"a naive datetime has no place on the request path: {value!r}")
        return value.isoformat().encode()
    if isinstance(value, date):
        return value.isoformat().encode()
    if isinstance(value, (list, tuple)):
        return b"{" + b",".join(_element(item) for item in value) + b"}"
    raise TypeError(f"no text format here for {kind.__name__}: {value!r}")


def _element(item: object) -> bytes:
    written = text(item)
    if written is None:
        return b"NULL"
    if isinstance(item, (list, tuple)):
        return written
    return b'"' + written.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _boolean(data: bytes) -> bool:
    return data == b"t"


def _string(data: bytes) -> str:
    return data.decode()


# Columns read here; any other type through psycopg's loader (see _Wire.loader).
_READ: dict[int, Callable[[bytes], Any]] = {
    postgres.types["int2"].oid: int, postgres.types["int4"].oid: int,
    postgres.types["int8"].oid: int, postgres.types["oid"].oid: int,
    postgres.types["bool"].oid: _boolean,
    postgres.types["text"].oid: _string, postgres.types["varchar"].oid: _string,
    postgres.types["bpchar"].oid: _string, postgres.types["name"].oid: _string,
}


class _Wire:
    """What one connection was given: its prepared statements and the loaders it uses."""

    __slots__ = ("loaders", "prepared", "syncs_owed")

    def __init__(self) -> None:
        self.prepared: set[bytes] = set()
        self.syncs_owed = 0  # commits run_before_commit sent that committed has not read
        self.loaders: dict[int, Callable[[bytes], Any]] = dict(_READ)

    def loader(self, conn: psycopg.AsyncConnection[Any], oid: int) -> Callable[[bytes], Any]:
        found = self.loaders.get(oid)
        if found is None:
            # As psycopg's cursor does: a type it has no loader for is read as text.
            kind = (conn.adapters.get_loader(oid, _TEXT)
                    or conn.adapters.get_loader(_INVALID_OID, _TEXT))
            found = kind(oid, conn).load  # type: ignore[misc]
            self.loaders[oid] = found
        return found


_wires: WeakKeyDictionary[psycopg.AsyncConnection[Any], _Wire] = WeakKeyDictionary()


async def run(conn: psycopg.AsyncConnection[Any], statement: Statement,
              params: Mapping[str, object]) -> pq.abc.PGresult:
    """Run ``statement`` on ``conn`` (in autocommit: its own transaction); its result."""
    values = statement.values(params)  # a bad value fails before anything is sent
    await _prepared(conn, statement)
    pgconn = conn.pgconn
    pgconn.send_query_prepared(statement.name, values)
    return _result(await conn.wait(generators.execute(pgconn)))


async def run_before_commit(conn: psycopg.AsyncConnection[Any], statement: Statement,
                            params: Mapping[str, object], then: Statement | None = None
                            ) -> pq.abc.PGresult:
    """Run ``statement`` on ``conn`` as its own transaction, and return its result as soon
    as it has run, before its commit is done; ``committed(conn)`` then waits for the
    commit and must be awaited before ``conn`` is used again. ``then`` (a statement without
    parameters) runs behind it in the same round trip, as a transaction of its own, and
    ``committed`` waits for it too.

    Sent in libpq's pipeline mode as the statement, a Flush and a Sync (then ``then`` and a
    Sync): PostgreSQL sends the statement's rows at the Flush, commits the implicit
    transaction at the Sync and says so. A statement that fails raises here, its
    transaction rolled back.
    """
    values = statement.values(params)
    await _prepared(conn, statement)
    if then is not None:
        await _prepared(conn, then)
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    try:
        pgconn.send_query_prepared(statement.name, values)
        pgconn.send_flush_request()
        pgconn.pipeline_sync()
        if then is not None:
            pgconn.send_query_prepared(then.name, [])
            pgconn.pipeline_sync()
        _wires[conn].syncs_owed = 1 if then is None else 2
        # Sent, and the statement's results read up to the end of its own (libpq's NULL),
        # in one wait: the commit's come later, to ``committed``.
        results = await conn.wait(generators.execute(pgconn))
    except BaseException:
        _abandon(pgconn)
        raise
    if any(result.status == _FATAL_ERROR for result in results):
        with contextlib.suppress(psycopg.Error):
            await committed(conn)  # nothing to commit: the Sync only ends the failed one
    return _result(results)  # raises the statement's error, if it failed


async def committed(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wait for the commits of what ``run_before_commit`` sent; raises the first error
    they failed with (a deferred constraint, a lost connection)."""
    pgconn = conn.pgconn
    wire = _wires[conn]
    try:
        failed = await conn.wait(_synced(pgconn, wire))
        pgconn.exit_pipeline_mode()
    except BaseException:
        _abandon(pgconn)
        raise
    if failed is not None:
        raise errors.error_from_result(failed, encoding="utf-8")


def _synced(pgconn: pq.abc.PGconn, wire: _Wire
            ) -> Generator[Any, Any, pq.abc.PGresult | None]:
    """Read results until every Sync owed has answered (in one wait on the connection);
    the first error among them, if any."""
    failed: pq.abc.PGresult | None = None
    while wire.syncs_owed:
        result = yield from generators.fetch(pgconn)
        if result is None:
            continue  # the end of one statement's results
        if result.status == _PIPELINE_SYNC:
            wire.syncs_owed -= 1
        elif result.status == _FATAL_ERROR and failed is None:
            failed = result
    return failed


def _abandon(pgconn: pq.abc.PGconn) -> None:
    """Close a connection left half-way through a pipeline (its caller was cancelled, or it
    broke): in no state to run anything else, the pool replaces it."""
    pgconn.finish()


async def _prepared(conn: psycopg.AsyncConnection[Any], statement: Statement) -> None:
    """Prepare ``statement`` on ``conn`` on its first use there."""
    wire = _wires.get(conn)
    if wire is None:
        wire = _wires[conn] = _Wire()
    if statement.name not in wire.prepared:
        pgconn = conn.pgconn
        pgconn.send_prepare(statement.name, statement.text, param_types=statement.types)
        _result(await conn.wait(generators.execute(pgconn)))
        wire.prepared.add(statement.name)


def _result(results: list[pq.abc.PGresult]) -> pq.abc.PGresult:
    if not results:
        raise errors.InternalError("the server sent no result")
    for result in results:
        status = result.status
        if status == _FATAL_ERROR:
            raise errors.error_from_result(result, encoding="utf-8")
        if status != _TUPLES_OK and status != _COMMAND_OK:
            raise errors.InternalError(f"unexpected result status {pq.ExecStatus(status).name}")
    return results[-1]


def rows(conn: psycopg.AsyncConnection[Any], result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
    """The result's rows as tuples of Python values."""
    fields = result.nfields
    if not fields:
        return []
    wire = _wires[conn]
    loads = [wire.loader(conn, result.ftype(column)) for column in range(fields)]
    found = []
    for row in range(result.ntuples):
        values = []
        for column in range(fields):
            data = result.get_value(row, column)
            values.append(None if data is None else loads[column](data))
        found.append(tuple(values))
    return found


def changed(result: pq.abc.PGresult) -> int:
    """How many rows the statement changed (``rowcount``)."""
    count = result.command_tuples
    return -1 if count is None else count
