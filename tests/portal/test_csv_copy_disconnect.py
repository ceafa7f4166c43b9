"""A COPY export that the client leaves midway is cancelled at once: the database stops
sending, and the connection the request used is idle and usable again, not stuck in a
half-read COPY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie

import psycopg
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import User
from billing.models import ModelPrice
from billing.selectors import usage_records_of
from portal.csv_copy import copy_csv_lines
from portal.views import usage as usage_views

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="COPY is PostgreSQL's"),
]

ROWS = 100_000  # about 20 MB of CSV: more than the socket buffers hold between the two ends
SEED = """
INSERT INTO billing_usagerecord (request_id, user_id, model, worker, prompt_tokens,
    completion_tokens, cached_tokens, cache_write_tokens, endpoint, cost_micros, price_id,
    source, estimate_reason, over_cap, over_hold, status, created_at)
SELECT 'drop-' || g, %s, 'model-' || repeat('x', 120), '', 10, 5, 0, 0, 'chat', g, %s,
       'provider', '', false, false, 'ok', now() - g * interval '1 second'
FROM generate_series(1, %s) AS g
"""
COPY_BACKENDS = """
SELECT pid, state FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND query LIKE 'COPY (SELECT%%billing_usagerecord%%'
"""


@pytest.fixture(autouse=True)
def _sessions_gone_after() -> Iterator[None]:
    """A backend outlives its client's close by a moment; the test database is dropped at
    the end of the run only when no session is left in it. Only the sessions this test
    opened are waited for: others (a live router's pool, started by another test of this
    worker) are there for the whole run."""
    with _own_connection() as conn:
        started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    yield
    deadline = time.monotonic() + 10
    while _sessions_opened_since(started) and time.monotonic() < deadline:
        time.sleep(0.05)


def _sessions_opened_since(started: object) -> int:
    mine = connection.connection.info.backend_pid if connection.connection else 0
    with _own_connection() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid NOT IN (pg_backend_pid(), %s) "
                            "AND backend_start >= %s", [mine, started]).fetchone()[0]


def _own_connection() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None,
                           host=db["HOST"], port=db["PORT"] or None, autocommit=True)


@pytest.fixture
def heavy(make_user, price: ModelPrice) -> User:
    user = make_user(email="heavy@example.com")
    with connection.cursor() as cursor:
        cursor.execute(SEED, [user.pk, price.pk, ROWS])
    return user


def _copy_backends() -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(COPY_BACKENDS)
        return dict(cursor.fetchall())


def _settled(backends: dict[int, str], *, wait_s: float = 10.0) -> dict[int, str]:
    """The COPY backends once none of them is active any more, or as they are after
    ``wait_s`` (a cancel takes a round trip to the server)."""
    deadline = time.monotonic() + wait_s
    while any(state == "active" for state in backends.values()) and (
            time.monotonic() < deadline):
        time.sleep(0.05)
        backends = _copy_backends()
    return backends


def test_closing_the_stream_midway_cancels_the_copy_and_frees_the_connection(heavy):
    records = usage_records_of(user=heavy)

    async def read_two_chunks_then_leave() -> tuple[int, int, int]:
        lines = copy_csv_lines(header=usage_views.CSV_HEADER, records=records,
                               columns=usage_views.CSV_SQL_ROW)
        received = len(await anext(lines)) + len(await anext(lines))  # header, rows
        backend = await sync_to_async(_backend_pid)()
        sending = _backend_state(backend)  # what the server does while the client waits
        await lines.aclose()
        after = _settled_state(backend)
        # The same (thread's) connection takes the next query at once.
        answer = await sync_to_async(_select_one)()
        # That thread ends with the context: its connection would stay open (and keep the
        # test database from being dropped) until collected.
        await sync_to_async(_close_connection)()
        return received, sending, after, answer

    async def run() -> tuple[int, tuple[str, str], tuple[str, str], int]:
        async with ThreadSensitiveContext():
            return await read_two_chunks_then_leave()

    received, sending, after, answer = asyncio.run(run())

    assert 0 < received < 1_000_000  # left after the first chunk of rows
    assert sending[0] == "active"
    assert sending[1].startswith("COPY (SELECT")
    assert after == ("idle", sending[1])  # the COPY was cancelled, nothing else ran
    assert answer == 1


def _backend_state(pid: int) -> tuple[str, str]:
    """Asked on a connection of its own (callable from the event loop's thread)."""
    with _own_connection() as conn:
        row = conn.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s",
                           [pid]).fetchone()
    assert row is not None
    return row


def _settled_state(pid: int, *, wait_s: float = 10.0) -> tuple[str, str]:
    deadline = time.monotonic() + wait_s
    while (state := _backend_state(pid))[0] == "active" and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def _backend_pid() -> int:
    return connection.connection.info.backend_pid


def _close_connection() -> None:
    connection.close()  # the calling thread's


def _select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def test_a_client_that_disconnects_from_the_asgi_server_stops_the_export(heavy, monkeypatch):
    # The request's thread closes its connection when the request ends, as under ASGI in
    # production (a thread per request), instead of leaving it open past the test.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    client = Client()
    client.force_login(heavy)
    cookie = SimpleCookie()
    cookie["sessionid"] = client.cookies["sessionid"].value
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": reverse("portal:usage_csv"),
             "raw_path": reverse("portal:usage_csv").encode(), "query_string": b"",
             "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"testserver"),
                         (b"cookie", cookie.output(header="", sep=";").strip().encode())]}
    body: list[bytes] = []
    statuses: list[int] = []
    finished: list[bool] = []

    async def run() -> None:
        enough = asyncio.Event()
        requests = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict:
            if requests:
                return requests.pop()
            await enough.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message.get("more_body"):
                body.append(message["body"])
                if sum(map(len, body)) > 256 * 1024:
                    enough.set()  # the client leaves after a quarter of a megabyte
            else:
                finished.append(True)

        await ASGIHandler()(scope, receive, send)

    asyncio.run(run())

    assert statuses == [200]
    assert b"".join(body).startswith(b"time_utc,request_id,")
    assert sum(map(len, body)) < 5_000_000  # far from the whole export (about 20 MB)
    assert not finished  # the response never ended: the client had left
    states = _settled(_copy_backends())
    assert "active" not in states.values()

