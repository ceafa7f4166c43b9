"""The router's sessions on PostgreSQL are what its money needs, whatever the server's
defaults (``billing.session_settings``): commits that wait for the disk, and transactions
that read committed. A DBA's ``ALTER DATABASE ... SET`` stands in for a server, database or
role default here; it applies to the connections opened after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from billing.errors import InsufficientFunds
from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import connections as hot_path_connections
from billing.services.hot_path import hold_committed, hold_reserve, hold_resolve
from tests.loop_thread import LoopThread
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def database_default() -> Iterator[Callable[[str, str], None]]:
    """Set one of this test database's defaults, as a DBA would. Reset afterwards."""
    name = connection.settings_dict["NAME"]
    changed: list[str] = []

    def set_default(setting: str, value: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'")
        changed.append(setting)
        connections.close_all()  # the next connection opens with the database's default

    yield set_default
    with connection.cursor() as cursor:
        for setting in changed:
            cursor.execute(f'ALTER DATABASE "{name}" RESET {setting}')
    connections.close_all()


@pytest.fixture
def fresh_loop() -> Iterator[LoopThread]:
    """A loop, and with it a pool whose connections open after the database's default
    was set."""
    loop = LoopThread()
    yield loop
    loop.close()


def _setting(name: str = "synchronous_commit") -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return cursor.fetchone()[0]


def _wal(position: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {position}() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


async def _pool_setting(name: str = "synchronous_commit") -> str:
    pool = await hot_path_connections.pool()
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT current_setting(%s)", [name])).fetchone()
        return row[0]


def test_a_database_set_to_off_still_gets_the_routers_commits_on_the_disk(
    database_default, fresh_loop, user, price
):
    database_default("synchronous_commit", "off")
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
    database_default("synchronous_commit", stronger)
    assert _setting() == stronger
    assert fresh_loop.run(_pool_setting()) == stronger


def _reserve(user, price, hold_id: str, amount: int):
    return hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id, amount_micros=amount,
                        price_id=price.pk, model=price.model, api_key_id=None,
                        expires_at=timezone.now() + timedelta(minutes=5))


@pytest.mark.parametrize("batching", [True, False])
@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_a_database_isolated_more_strictly_still_reserves_concurrently_as_it_should(
    database_default, fresh_loop, user, price, settings, level, batching
):
    """Under those defaults, reservations at once on one wallet failed as serialization
    errors (503) where the wallet could have covered them; read committed lets exactly as
    many through as the wallet covers, and refuses the rest as 402."""
    settings.ROUTER_DB_BATCHING = batching
    wallet_credit(user=user, amount_micros=33 * 3_000, idempotency_key="f", memo="")
    database_default("default_transaction_isolation", level)
    assert _setting("default_transaction_isolation") == "read committed"
    assert fresh_loop.run(_pool_setting("default_transaction_isolation")) == "read committed"

    async def at_once() -> list[object]:
        return await asyncio.gather(*(_reserve(user, price, f"r{i}", 3_000) for i in range(60)),
                                    return_exceptions=True)

    results = fresh_loop.run(at_once())
    assert sum(result is None for result in results) == 33
    assert all(isinstance(result, InsufficientFunds) for result in results if result is not None)
