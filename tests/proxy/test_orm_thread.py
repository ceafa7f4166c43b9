"""A worker thread's ORM call replaces a connection the server dropped, once, and adds no
query when the connection works."""

from __future__ import annotations

import psycopg
import pytest
from django.db import OperationalError, connection, transaction

from billing.selectors import price_current
from proxy.ground.orm_thread import recycled
from tests.proxy.test_cyclic_garbage import cycle_collector_findings


def _select_one(calls: list[int]) -> int:
    calls.append(1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def _select_one_in_a_transaction(calls: list[int]) -> int:
    # The refused requests' counts are written so: after a dropped connection (CI, once,
    # behind a test that ended the router's sessions) the write failed and was not made
    # again, Django's rollback having left the connection looking usable.
    with transaction.atomic():
        return _select_one(calls)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("work", [_select_one, _select_one_in_a_transaction],
                         ids=["alone", "in_a_transaction"])
def test_a_dropped_connection_is_replaced_and_the_call_made_once_more(work):
    calls: list[int] = []
    assert recycled(lambda: work(calls)) == 1
    dropped = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"],
                         port=db["PORT"] or None, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [dropped])  # a restart, a failover
    calls.clear()

    assert recycled(lambda: work(calls)) == 1

    assert len(calls) == 2
    assert connection.connection.info.backend_pid != dropped


@pytest.mark.django_db(transaction=True)
def test_a_statement_that_fails_on_a_working_connection_is_not_made_again():
    calls: list[int] = []

    def too_slow() -> None:
        calls.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '10ms'")
            try:
                cursor.execute("SELECT pg_sleep(1)")
            finally:
                cursor.execute("RESET statement_timeout")

    with pytest.raises(OperationalError):
        recycled(too_slow)
    assert calls == [1]


@pytest.mark.django_db(transaction=True)
def test_a_working_connection_is_not_checked_again_before_the_next_call(settings):
    # Django's own recycling resets this flag, so that the next query first sends a
    # "SELECT 1" (CONN_HEALTH_CHECKS): a round trip on every lookup made here.
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    calls: list[int] = []
    recycled(lambda: _select_one(calls))
    assert connection.health_check_done
    recycled(lambda: _select_one(calls))
    assert connection.health_check_done


@pytest.mark.django_db(transaction=True)
def test_a_replaced_connection_leaves_nothing_for_the_cycle_collector():
    # Django raises a dropped connection's error from a frame that holds it: a cycle with
    # the frames of the call that found the connection broken (a lookup's, here), which
    # appeared under load in the refusals' census (tests/proxy/test_cyclic_garbage.py).
    assert recycled(lambda: price_current(model="no-such-model")) is None
    dropped = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"],
                         port=db["PORT"] or None, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [dropped])

    with cycle_collector_findings() as found:
        assert recycled(lambda: price_current(model="no-such-model")) is None
    assert connection.connection.info.backend_pid != dropped
    assert found == [], " ".join(found)
