"""The router's commits wait for the disk whatever the server says.

Money is only as safe as its commit: a hold whose answer went out, or a charge, must not be
forgotten by a crash of PostgreSQL. A server, database or role set to ``synchronous_commit
= off`` (a common tuning for write-heavy work) would make every such commit return before
it is on the disk, and the request path's wait for its hold's commit (``hold_commits``)
would wait for nothing. So the router's connections, the request path's pool and Django's
alike, raise ``off`` to ``local`` (on this server's disk, not waiting for standbys, which
``off`` did not ask for either) and leave every stronger setting as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import connections as hot_path_connections
from billing.services.hot_path import hold_committed, hold_reserve, hold_resolve
from tests.loop_thread import LoopThread
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def database_default() -> Iterator[Callable[[str], None]]:
    """Set this test database's ``synchronous_commit`` default, as a DBA would (``ALTER
    DATABASE``): it applies to the connections opened after. Reset afterwards."""
    name = connection.settings_dict["NAME"]

    def set_default(value: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {value}')
        connections.close_all()  # the next connection opens with the database's default

    yield set_default
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" RESET synchronous_commit')
    connections.close_all()


@pytest.fixture
def fresh_loop() -> Iterator[LoopThread]:
    """A loop, and with it a pool whose connections open after the database's default
    was set."""
    loop = LoopThread()
    yield loop
    loop.close()


def _setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('synchronous_commit')")
        return cursor.fetchone()[0]


def _wal(position: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {position}() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


async def _pool_setting() -> str:
    pool = await hot_path_connections.pool()
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT current_setting('synchronous_commit')")
                     ).fetchone()
        return row[0]


def test_a_database_set_to_off_still_gets_the_routers_commits_on_the_disk(
    database_default, fresh_loop, user, price
):
    database_default("off")
    # Django's connections (top-ups, the admin's credits, the sweeper, the ORM path)...
    assert _setting() == "local"
    before = _wal("pg_current_wal_insert_lsn")
    wallet_credit(user=user, amount_micros=100_000, idempotency_key="f", memo="")
    assert _wal("pg_current_wal_flush_lsn") > before
    # ...and the request path's pool: a reservation alone commits waiting for the disk.
    assert fresh_loop.run(_pool_setting()) == "local"
    before = _wal("pg_current_wal_insert_lsn")

    async def reserve() -> None:
        await hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id="h", amount_micros=1_000,
                           price_id=price.pk, model=price.model, api_key_id=None,
                           expires_at=timezone.now() + timedelta(minutes=5), committed=False)
        await hold_committed(hold_id="h")

    fresh_loop.run(reserve())
    assert _wal("pg_current_wal_flush_lsn") > before
    usage = UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")
    assert fresh_loop.run(hold_resolve(hold_id="h", usage=usage, cost_micros=7)) == 7


@pytest.mark.parametrize("stronger", ["on", "remote_write", "remote_apply", "local"])
def test_any_setting_that_waits_for_the_disk_is_left_as_it_is(
    database_default, fresh_loop, stronger
):
    """A server that waits for its standbys too (``on``, ``remote_*``) keeps doing so for
    the router's commits: nothing is lowered."""
    database_default(stronger)
    assert _setting() == stronger
    assert fresh_loop.run(_pool_setting()) == stronger
