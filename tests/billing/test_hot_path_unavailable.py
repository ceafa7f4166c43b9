"""A database that cannot be reached, or no pooled connection free in time: the request path's
statements say so at once (``DatabaseUnavailable``), and a reservation that may have
committed is released once the database answers again, not left for the sweeper."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.errors import DatabaseUnavailable
from billing.models import Hold, UsageRecord, Wallet
from billing.services import hot_path, wallet_credit
from billing.services.hot_path import backoff, close_pools, hold_reserve
from billing.services.hot_path.connections import fetch, pool
from billing.services.hot_path.statements import (
    RESERVE_BUSY_SQL,
    RESERVE_MANY_SQL,
    RESERVE_SQL,
    RESOLVE_AT_SQL,
    RESOLVE_MANY_AT_SQL,
    RESOLVE_MANY_SQL,
    RESOLVE_SQL,
)
from tests.loop_thread import LoopThread
from tests.wallet_ids import wallet_id_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


def _reserve(user_id: int, price: Any, hold_id: str) -> Any:
    return hold_reserve(wallet_id=wallet_id_of(user_id), hold_id=hold_id, amount_micros=1_000,
                        price_id=price.pk, model=price.model, api_key_id=None,
                        expires_at=timezone.now() + timedelta(minutes=5))


@pytest.fixture
def lost_answers(monkeypatch) -> dict[str, Any]:
    """Reservations commit, then their connection dies before the answer comes back; the
    database then refuses ``resolves_refused`` resolutions before it answers again."""
    real, real_before_commit = hot_path.fetch, hot_path.fetch_before_commit
    seen: dict[str, Any] = {"reserves": 0, "resolves_refused": 2}

    async def fetch_before_commit(sql: str, params: dict[str, object], **kwargs: Any) -> Any:
        if sql in (RESERVE_SQL, RESERVE_BUSY_SQL, RESERVE_MANY_SQL):
            seen["reserves"] += 1
            await (await real_before_commit(sql, params, **kwargs))[1]  # committed
            raise DatabaseUnavailable("the server closed the connection unexpectedly")
        return await real_before_commit(sql, params, **kwargs)

    async def fetch(sql: str, params: dict[str, object], *, rows: bool = False) -> Any:
        if (sql in (RESOLVE_SQL, RESOLVE_MANY_SQL, RESOLVE_AT_SQL, RESOLVE_MANY_AT_SQL)
                and seen["resolves_refused"]):
            seen["resolves_refused"] -= 1
            raise DatabaseUnavailable("connection refused")
        return await real(sql, params, rows=rows)

    monkeypatch.setattr(hot_path, "fetch", fetch)
    monkeypatch.setattr(hot_path, "fetch_before_commit", fetch_before_commit)
    monkeypatch.setattr(hot_path, "RETRY_DELAYS_S", (0.01,))
    return seen


def test_a_statement_that_gets_no_pooled_connection_in_time_fails_after_one_wait(
    loop, settings
):
    loop.run(close_pools())
    settings.ROUTER_DB_POOL_SIZE = 1
    settings.ROUTER_DB_WAIT_MS = 200

    async def while_the_only_connection_is_busy() -> float:
        async with (await pool()).connection():
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                await fetch("SELECT 1", {})
            return time.monotonic() - started

    # One wait of ROUTER_DB_WAIT_MS: the statement is not tried again on another.
    assert 0.2 <= loop.run(while_the_only_connection_is_busy()) < 0.35
    loop.run(close_pools())  # the next tests get a pool of the usual size


@pytest.mark.parametrize(("batching", "requests"), [(True, 1), (True, 5), (False, 5)],
                         ids=["alone", "in-a-group", "unbatched"])
def test_reservations_that_may_have_committed_before_the_database_went_away_are_released(
    loop, user, price, settings, lost_answers, batching, requests
):
    settings.ROUTER_DB_BATCHING = batching
    wallet_credit(user=user, amount_micros=100_000, idempotency_key="f", memo="")

    async def reserve_all() -> list[object]:
        return await asyncio.gather(*(_reserve(user.pk, price, f"r{i}")
                                      for i in range(requests)), return_exceptions=True)

    outcomes = loop.run(reserve_all())
    assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes), outcomes
    # A group the database did not answer is not sent again one by one: each request
    # would wait for the database once more.
    assert lost_answers["reserves"] == (1 if batching else requests)
    loop.run(close_pools())  # lets the releases, which retry, finish
    assert list(Hold.objects.values_list("status", flat=True)) == ["voided"] * requests
    assert set(UsageRecord.objects.values_list("status", "cost_micros")) == {
        ("cancelled", 0)}
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (100_000, 0)


def test_a_release_the_database_never_answers_is_left_for_the_sweeper_after_its_window(
    loop, user, price, settings, lost_answers, monkeypatch, caplog
):
    settings.ROUTER_DB_BATCHING = False
    lost_answers["resolves_refused"] = 10**9
    monkeypatch.setattr(hot_path, "RETRY_WINDOW_S", 0.05)
    wallet_credit(user=user, amount_micros=100_000, idempotency_key="f", memo="")
    with pytest.raises(DatabaseUnavailable):
        loop.run(_reserve(user.pk, price, "stuck"))
    with caplog.at_level(logging.ERROR, logger="billing.services.hot_path"):
        loop.run(close_pools())
    assert Hold.objects.get().status == "pending"
    assert "request stuck: its hold could not be released" in caplog.text


def test_retries_pause_longer_each_time_up_to_the_last_pause_and_stop_within_the_window():
    pauses = list(backoff((0.25, 0.5, 1.0, 2.0), 10.0))
    assert pauses == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert list(backoff((1.0,), 0.5)) == []
