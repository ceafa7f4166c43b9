"""The spool of resolutions that could not reach the database (``proxy.money.spool``): what
goes in, when its file goes, and what replaying it does, against the real database. A
process's death is played by closing its spool (the kernel releases the lock alike);
``tests/proxy/test_charge_spool_processes.py`` kills a real one."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import hold_reserve
from proxy import money
from proxy.money import settlement, spool
from proxy.money.spool import Resolution, charge_spool, replay_orphaned_spools
from tests.loop_thread import LoopThread
from tests.router_admin.cli import router
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)

USAGE = UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")
COST = 50  # 10 x 1 + 20 x 2 micro-USD at the test price


@pytest.fixture
def loop():
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def spool_dir(settings, tmp_path) -> Path:
    settings.ROUTER_CHARGE_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


@pytest.fixture
def funded(user):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    return user


def _reserve(loop: LoopThread, user, price, hold_id: str) -> None:
    loop.run(hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=hold_id, amount_micros=210,
                          price_id=price.pk, model=price.model, api_key_id=None,
                          expires_at=timezone.now() + timedelta(minutes=5)))


def _database_away(*, until: float | None = None):
    """``hold_resolve`` as a database that cannot be reached (until ``until``, a
    ``time.monotonic()``) answers it."""
    real = settlement.hold_resolve

    async def away(**kwargs: object) -> int | None:
        if until is None or time.monotonic() < until:
            raise psycopg.OperationalError("the connection was lost")
        return await real(**kwargs)

    return away


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("charges-*.jsonl")) if directory.is_dir() else []


def _charge_given_up_at_shutdown(loop: LoopThread, user, price, hold_id: str,
                                 monkeypatch) -> None:
    """An answer's charge tries while the database is away, and the process shuts down
    (giving up after 0.3 s here, a minute in production), then dies."""
    monkeypatch.setattr(settlement, "hold_resolve", _database_away())
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.05,))
    monkeypatch.setattr(settlement, "SHUTDOWN_RETRY_S", 0.3)

    async def answered_then_shut_down() -> None:
        money.in_background(settlement.settle(
            request_id=hold_id, wallet_id=wallet_id_of(user.pk), price=price, usage=USAGE,
            fallback=lambda: USAGE, deferred=True))
        await asyncio.sleep(0.1)
        await money.wait_for_settlements()

    loop.run(answered_then_shut_down())
    charge_spool().close()  # the process's end: its lock goes, its file stays
    monkeypatch.undo()


def test_a_charge_a_process_gave_up_on_is_written_by_the_next(
    loop, spool_dir, funded, price, monkeypatch
):
    _reserve(loop, funded, price, "given-up")
    _charge_given_up_at_shutdown(loop, funded, price, "given-up", monkeypatch)
    assert Hold.objects.get(pk="given-up").status == "pending"
    (left,) = _files(spool_dir)
    assert '"given-up"' in left.read_text()

    result = loop.run(replay_orphaned_spools())

    assert (result.files, result.written, result.already, result.failed) == (1, 1, 0, 0)
    assert _files(spool_dir) == []
    assert UsageRecord.objects.get(request_id="given-up").cost_micros == COST
    assert LedgerEntry.objects.get(hold_id="given-up").amount_micros == -COST
    wallet = Wallet.objects.get(user=funded)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000 - COST, 0)


def test_a_spool_replayed_twice_charges_once(loop, spool_dir, funded, price, monkeypatch):
    _reserve(loop, funded, price, "twice")
    _charge_given_up_at_shutdown(loop, funded, price, "twice", monkeypatch)
    (left,) = _files(spool_dir)
    copy = left.with_name("charges-copy.jsonl")
    shutil.copy(left, copy)  # a second process's file naming the same hold

    first = loop.run(replay_orphaned_spools())

    assert (first.files, first.written, first.already) == (2, 1, 1)
    assert LedgerEntry.objects.filter(hold_id="twice").count() == 1
    wallet = Wallet.objects.get(user=funded)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000 - COST, 0)


def test_the_spool_of_a_process_that_lives_is_left_to_it(loop, spool_dir, funded, price):
    _reserve(loop, funded, price, "alive")
    assert charge_spool().add(Resolution("alive", COST, USAGE))
    (live,) = _files(spool_dir)

    result = loop.run(replay_orphaned_spools())

    assert (result.files, result.written) == (0, 0)
    assert _files(spool_dir) == [live]
    assert Hold.objects.get(pk="alive").status == "pending"
    charge_spool().landed("alive")  # its own try wrote it: nothing left, no file
    assert _files(spool_dir) == []


def test_a_database_still_away_leaves_the_spool_for_a_later_try(
    loop, spool_dir, funded, price, monkeypatch
):
    _reserve(loop, funded, price, "later")
    _charge_given_up_at_shutdown(loop, funded, price, "later", monkeypatch)
    monkeypatch.setattr(spool, "hold_resolve", _database_away())

    result = loop.run(replay_orphaned_spools())

    assert (result.files, result.left, result.written) == (0, 1, 0)
    assert len(_files(spool_dir)) == 1
    # Nothing keeps it locked meanwhile: the next try, the database back, writes it.
    monkeypatch.undo()
    assert loop.run(replay_orphaned_spools()).written == 1
    assert Hold.objects.get(pk="later").status == "posted"


def test_a_line_cut_short_by_the_kill_is_skipped_and_the_others_written(
    loop, spool_dir, funded, price, monkeypatch
):
    _reserve(loop, funded, price, "whole")
    _charge_given_up_at_shutdown(loop, funded, price, "whole", monkeypatch)
    (left,) = _files(spool_dir)
    with left.open("ab") as file:
        file.write(Resolution("torn", COST, USAGE).line()[:40])  # no end of line

    result = loop.run(replay_orphaned_spools())

    assert (result.files, result.written, result.failed) == (1, 1, 1)
    assert Hold.objects.get(pk="whole").status == "posted"


def test_a_charge_that_lands_on_a_later_try_leaves_no_file(
    loop, spool_dir, funded, price, monkeypatch
):
    """The common outage: the database is back within the charge's tries. The line was
    written at the first failure, and the file goes with the charge."""
    _reserve(loop, funded, price, "back")
    monkeypatch.setattr(settlement, "hold_resolve",
                        _database_away(until=time.monotonic() + 0.3))
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.05,))

    async def settle_watching_the_file() -> tuple[int, int]:
        task = money.in_background(settlement.settle(
            request_id="back", wallet_id=wallet_id_of(funded.pk), price=price, usage=USAGE,
            fallback=lambda: USAGE, deferred=True))
        await asyncio.sleep(0.15)
        files_while_away = len(_files(spool_dir))
        return files_while_away, await task

    files_while_away, charged = loop.run(settle_watching_the_file())

    assert (files_while_away, charged) == (1, COST)
    assert _files(spool_dir) == []
    assert Hold.objects.get(pk="back").status == "posted"


def test_a_charge_past_its_holds_life_is_tried_again_while_its_process_lives(
    loop, spool_dir, funded, price, monkeypatch
):
    """Its own tries ended (the hold's life, 0.3 s here); the database comes back before
    the sweeper released the hold: the process's replayer still writes it."""
    _reserve(loop, funded, price, "long")
    monkeypatch.setattr(settlement, "hold_resolve", _database_away())
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.05,))
    monkeypatch.setattr(settlement, "charge_retry_seconds", lambda: 0.3)
    assert loop.run(settlement.settle(
        request_id="long", wallet_id=wallet_id_of(funded.pk), price=price, usage=USAGE,
        fallback=lambda: USAGE, deferred=True)) == 0
    assert [r.hold_id for r in charge_spool().given_up()] == ["long"]
    monkeypatch.undo()

    result = loop.run(spool.replay_given_up())

    assert result.written == 1
    assert charge_spool().given_up() == []
    assert _files(spool_dir) == []
    assert Hold.objects.get(pk="long").status == "posted"


def test_nothing_is_spooled_when_the_spool_is_off(loop, settings):
    settings.ROUTER_CHARGE_SPOOL_DIR = ""
    assert not charge_spool().add(Resolution("off", COST, USAGE))
    assert loop.run(replay_orphaned_spools()).files == 0


def test_a_resolution_survives_its_line(funded):
    resolution = Resolution("line", None, UsageReport(
        prompt_tokens=3, completion_tokens=0, source=UsageRecord.Source.ESTIMATED,
        status=UsageRecord.Status.CANCELLED, estimate_reason="settle_error", over_cap=True,
        worker="w", latency_ms=7, ttft_ms=None, upstream_cost_micros=None),
        created_at=timezone.now())
    assert Resolution.parse(resolution.line()) == resolution


def test_the_lock_is_the_processes_own(spool_dir):
    """What tells a live process's file from a dead one's: its flock, which another open
    of the file cannot take while the process holds it."""
    assert charge_spool().add(Resolution("locked", COST, USAGE))
    path = charge_spool().path
    assert path is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        charge_spool().close()  # kept: its line is still waiting
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    assert path.exists()


def test_an_operator_replays_a_spool_copied_from_a_machine_that_died(
    loop, spool_dir, funded, price, monkeypatch, tmp_path
):
    _reserve(loop, funded, price, "copied")
    _charge_given_up_at_shutdown(loop, funded, price, "copied", monkeypatch)
    copied = tmp_path / "from-the-dead-machine"
    shutil.copytree(spool_dir, copied)
    shutil.rmtree(spool_dir)

    printed = router("replay-charges", "--dir", str(copied))

    assert printed == ["Replayed 1 spool file(s): 1 resolution(s) written, 0 already "
                       "resolved, 0 refused or unreadable (logged)."]
    assert _files(copied) == []
    assert UsageRecord.objects.get(request_id="copied").cost_micros == COST


def test_a_spool_that_cannot_be_written_costs_the_charge_nothing(
    loop, settings, funded, price, monkeypatch, tmp_path, caplog
):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    settings.ROUTER_CHARGE_SPOOL_DIR = str(blocked / "spool")
    _reserve(loop, funded, price, "unspooled")
    monkeypatch.setattr(settlement, "hold_resolve",
                        _database_away(until=time.monotonic() + 0.2))
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.05,))

    charged = loop.run(settlement.settle(
        request_id="unspooled", wallet_id=wallet_id_of(funded.pk), price=price, usage=USAGE,
        fallback=lambda: USAGE, deferred=True))

    assert charged == COST
    assert "its resolution could not be spooled" in caplog.text
    assert UsageRecord.objects.get(request_id="unspooled").estimate_reason == ""
