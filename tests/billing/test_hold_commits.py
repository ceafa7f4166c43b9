"""A reservation answers before its commit is done, and everything that counts on the hold
waits for that commit: the request's answer (``hold_committed``) and the hold's
resolution. PostgreSQL takes its time over the commit, or refuses it
(``tests.reservation_commits``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.errors import DatabaseUnavailable
from billing.models import Hold, UsageRecord, Wallet
from billing.selectors import wallet_audit
from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import (
    connections,
    hold_commits,
    hold_committed,
    hold_discard,
    hold_reserve,
    hold_resolve,
    statements,
)
from billing.services.hot_path.connections import fetch_before_commit
from tests.reservation_commits import REFUSE, SLEEP, at_reservation_commit
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)

COMMIT_SECONDS = 0.4  # how long the slow commit takes


@pytest.fixture(autouse=True, params=["batched", "alone"])
def _paths(request, settings) -> None:
    settings.ROUTER_DB_BATCHING = request.param == "batched"


@pytest.fixture
def slow_commits() -> Iterator[None]:
    with at_reservation_commit(SLEEP.format(seconds=COMMIT_SECONDS)):
        yield


@pytest.fixture
def refused_commits() -> Iterator[None]:
    with at_reservation_commit(REFUSE):
        yield


@pytest.fixture
def slow_durable(monkeypatch) -> None:
    """DURABLE_SQL, behind a reservation that commits without waiting for the disk, takes
    COMMIT_SECONDS."""
    monkeypatch.setattr(connections, "DURABLE_SQL",
                        f"SELECT pg_sleep({COMMIT_SECONDS}), {statements.DURABLE_SQL[7:]}")


def _reserve(user, price, hold_id: str, *, committed: bool = False):
    """The request path's reservation (``committed=False``): it answers before its commit."""
    return hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id, amount_micros=1_000,
                        price_id=price.pk, model=price.model, api_key_id=None,
                        expires_at=timezone.now() + timedelta(minutes=5), committed=committed)


def _usage() -> UsageReport:
    return UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")


def _funded(user) -> Wallet:
    wallet_credit(user=user, amount_micros=100_000, idempotency_key="f", memo="")
    return Wallet.objects.get(user=user)


def test_a_reservation_answers_before_its_commit_and_the_answer_waits_for_the_commit(
    loop, user, price, slow_commits
):
    _funded(user)

    async def reserve() -> tuple[float, bool, float]:
        started = time.monotonic()
        await _reserve(user, price, "h")
        answered = time.monotonic() - started
        # From another connection, before the commit: nobody sees the hold yet.
        seen_before = await asyncio.to_thread(_hold_exists, "h")
        await hold_committed(hold_id="h")
        return answered, seen_before, time.monotonic() - started

    answered, seen_before, committed = loop.run(reserve())
    assert answered < COMMIT_SECONDS / 2 <= COMMIT_SECONDS <= committed
    assert not seen_before
    assert Hold.objects.get(pk="h").status == "pending"
    assert hold_commits.in_flight() == 0  # a commit that succeeded is forgotten
    loop.run(hold_resolve(hold_id="h", usage=_usage(), cost_micros=None))


async def _visible_within(hold_id: str, seconds: float) -> bool:
    """Whether another connection sees the hold within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_hold_exists, hold_id):
            return True
    return False


def _hold_exists(hold_id: str) -> bool:
    """From a thread of its own, on a connection of its own (closed after)."""
    try:
        return Hold.objects.filter(pk=hold_id).exists()
    finally:
        connection.close()


@pytest.mark.parametrize("resolution", ["settle", "void", "discard"])
def test_a_hold_resolved_before_its_commit_is_done_is_resolved_once_it_is(
    loop, user, price, slow_commits, resolution
):
    """The request's settle (or void, or discard) of a hold still committing would find no
    hold and leave it pending for the sweeper: it waits for the commit first."""
    _funded(user)

    async def reserve_and_resolve() -> None:
        await _reserve(user, price, "h")
        if resolution == "discard":
            await hold_discard(hold_id="h")
        else:
            charged = await hold_resolve(hold_id="h", usage=_usage(),
                                         cost_micros=700 if resolution == "settle" else None)
            assert charged == (700 if resolution == "settle" else 0)

    loop.run(reserve_and_resolve())
    holds = dict(Hold.objects.values_list("pk", "status"))
    assert holds == {"settle": {"h": "posted"}, "void": {"h": "voided"}, "discard": {}}[
        resolution]
    wallet = Wallet.objects.get(user=user)
    charged = 700 if resolution == "settle" else 0
    assert (wallet.posted_micros, wallet.pending_micros) == (100_000 - charged, 0)
    assert wallet_audit(wallet_id=wallet.pk).consistent


def test_a_reservation_whose_commit_fails_holds_nothing_and_says_so(
    loop, user, price, refused_commits
):
    """The statement granted the hold, then its commit was refused: the request learns it
    before any answer goes out, and nothing was reserved."""
    _funded(user)

    async def reserve() -> None:
        await _reserve(user, price, "h")  # granted: the statement ran
        with pytest.raises(DatabaseUnavailable, match="refused at commit"):
            await hold_committed(hold_id="h")
        # The request then resolves its hold, as it does whatever ends it: nothing to find.
        assert await hold_resolve(hold_id="h", usage=_usage(), cost_micros=None) is None

    loop.run(reserve())
    assert not Hold.objects.exists()
    assert not UsageRecord.objects.exists()
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (100_000, 0)
    assert hold_commits.in_flight() == 0


def test_reservations_sharing_a_statement_share_its_commit(loop, user, price,
                                                           refused_commits):
    """Grouped, every request of the statement learns that its commit failed."""
    _funded(user)

    async def reserve_many() -> list[object]:
        await asyncio.gather(*(_reserve(user, price, f"h{i}") for i in range(5)))
        return await asyncio.gather(*(hold_committed(hold_id=f"h{i}") for i in range(5)),
                                    return_exceptions=True)

    outcomes = loop.run(reserve_many())
    assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes), outcomes
    for i in range(5):
        loop.run(hold_resolve(hold_id=f"h{i}", usage=_usage(), cost_micros=None))
    assert not Hold.objects.exists()
    assert Wallet.objects.get(user=user).pending_micros == 0


def test_a_statement_that_fails_before_its_commit_raises_its_own_error_and_frees_its_connection(
    loop
):
    """An error of the statement itself comes with its result, as without the early answer,
    and its connection goes back to the pool ready for the next statement."""
    import psycopg

    async def run() -> object:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await fetch_before_commit("SELECT 1 / %(amount)s", {"amount": 0})
        row, commit = await fetch_before_commit("SELECT 2 + %(amount)s", {"amount": 2})
        await commit
        return row

    assert loop.run(run()) == (4,)


def test_a_reservation_asked_as_a_transaction_returns_once_it_is_on_the_disk(
    loop, user, price, slow_commits
):
    """The default, for every caller but the request path: the hold is there when the call
    returns, as after a transaction."""
    _funded(user)

    async def reserve() -> float:
        started = time.monotonic()
        await _reserve(user, price, "h", committed=True)
        return time.monotonic() - started

    assert loop.run(reserve()) >= COMMIT_SECONDS
    assert Hold.objects.get(pk="h").status == "pending"
    assert hold_commits.in_flight() == 0
    loop.run(hold_resolve(hold_id="h", usage=_usage(), cost_micros=None))


def test_a_reservation_asked_as_a_transaction_whose_commit_fails_raises_and_leaves_nothing(
    loop, user, price, refused_commits
):
    _funded(user)
    with pytest.raises(DatabaseUnavailable, match="refused at commit"):
        loop.run(_reserve(user, price, "h", committed=True))
    # What it may have left is released in the background: nothing, here.
    deadline = time.monotonic() + 5
    while hold_commits.in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hold_commits.in_flight() == 0
    assert not Hold.objects.exists()
    assert Wallet.objects.get(user=user).pending_micros == 0


def test_a_group_of_reservations_is_on_the_disk_when_its_answers_may_go(
    loop, user, price, slow_durable, settings
):
    """A group commits without waiting for the disk (its wallets' rows are not held through
    it); the transaction sent behind it (``DURABLE_SQL``) is what its answers wait for:
    made slow here, the group's holds are visible to others while ``hold_committed``
    still waits."""
    settings.ROUTER_DB_BATCHING = True  # groups are a batching matter, whichever path
    _funded(user)

    async def reserve() -> tuple[bool, float]:
        started = time.monotonic()
        # The first goes alone (nothing else in the database); the rest queue behind it
        # and go as one group.
        await asyncio.gather(*(_reserve(user, price, f"h{i}") for i in range(4)))
        seen = await _visible_within("h3", COMMIT_SECONDS / 2)
        await hold_committed(hold_id="h3")
        return seen, time.monotonic() - started

    seen, durable = loop.run(reserve())
    assert seen  # committed, visible
    # Only then on the disk as far as the answer knows (which also says h3 went in a group:
    # alone, nothing made its answer wait).
    assert durable >= COMMIT_SECONDS
    for i in range(4):
        loop.run(hold_resolve(hold_id=f"h{i}", usage=_usage(), cost_micros=None))


def test_a_reservation_alone_while_others_commit_is_made_durable_by_the_statement_behind_it(
    loop, user, price, slow_durable
):
    """Alone, but with another reservation's commit still on its way, a reservation does
    not hold its wallet's row through its wait for the disk: it commits at once (visible to
    others) and ``DURABLE_SQL``, made slow here, is what its answer waits for."""
    _funded(user)

    async def reserve() -> tuple[bool, float]:
        other: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        hold_commits.taking("another request", other)  # its commit on its way
        started = time.monotonic()
        try:
            await _reserve(user, price, "h")
            seen = await _visible_within("h", COMMIT_SECONDS / 2)
            await hold_committed(hold_id="h")
        finally:
            other.set_result(None)
        return seen, time.monotonic() - started

    seen, durable = loop.run(reserve())
    assert seen
    assert durable >= COMMIT_SECONDS
    loop.run(hold_resolve(hold_id="h", usage=_usage(), cost_micros=None))


def test_a_reservation_alone_is_on_the_disk_when_its_answer_may_go(loop, user, price):
    """Alone, a reservation commits waiting for the disk: the WAL is flushed past where it
    stood before the reservation once ``hold_committed`` returns."""
    _funded(user)
    before = _wal("pg_current_wal_insert_lsn")

    async def reserve() -> None:
        await _reserve(user, price, "h")
        await hold_committed(hold_id="h")

    loop.run(reserve())
    assert _lsn(_wal("pg_current_wal_flush_lsn")) > _lsn(before)
    loop.run(hold_resolve(hold_id="h", usage=_usage(), cost_micros=None))


def _wal(position: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {position}()")
        return cursor.fetchone()[0]


def test_the_durable_statement_flushes_what_committed_before_it_without_waiting():
    """What makes a reservation durable: a commit that did not wait for the disk is on the
    disk once ``DURABLE_SQL``, run after it, has returned."""
    import psycopg

    from billing.services.hot_path.connections import conninfo

    with psycopg.connect(conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE wrote (id int)")
        for _ in range(20):
            conn.execute("SET synchronous_commit = off")
            conn.execute("INSERT INTO wrote VALUES (1)")  # committed, maybe not on the disk
            written = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            conn.execute("SET synchronous_commit = on")
            conn.execute(statements.DURABLE_SQL)
            flushed = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
            assert _lsn(flushed) >= _lsn(written)


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)

