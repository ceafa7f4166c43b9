"""The upstream cost of every request is stored beside its charge, computed the same way,
by every settle path; roll-ups and margins add it up exactly, unknown kept apart from zero."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from billing.models import UsageRecord, UsageRollup
from billing.selectors.margin import (
    margin_by,
    margin_total,
    request_margin_micros,
    usage_with_margin,
)
from billing.services import UsageReport, hold_create, hold_settle, hold_void, wallet_credit
from billing.services.hot_path import batchers, hold_reserve, hold_resolve
from billing.services.rollups import usage_rollup
from proxy.upstream.providers.base import UpstreamTarget
from tests.loop_thread import LoopThread
from tests.wallet_ids import wallet_id_of

_prices = st.decimals(min_value=0, max_value=Decimal("200"), places=6)


def _exact_ceiling(prompt: int, completion: int, cached: int, written: int,
                   input_: Decimal, output: Decimal, cached_price: Decimal,
                   write_price: Decimal) -> int:
    """The cost computed here independently: the exact Decimal sum, rounded up once."""
    exact = ((prompt - cached - written) * input_ + cached * cached_price
             + written * write_price + completion * output)
    whole = int(exact)
    return whole + (1 if exact > whole else 0)


@st.composite
def _usage(draw: Any) -> tuple[int, int, int, int]:
    prompt = draw(st.integers(0, 200_000))
    cached = draw(st.integers(0, prompt))
    written = draw(st.integers(0, prompt - cached))
    return prompt, draw(st.integers(0, 100_000)), cached, written


@given(usage=_usage(), input_=_prices, output=_prices,
       cached_price=st.none() | _prices, write_price=st.none() | _prices)
def test_the_upstream_cost_is_the_exact_price_rounded_up_once(usage, input_, output,
                                                               cached_price, write_price):
    prompt, completion, cached, written = usage
    target = UpstreamTarget(worker_id=1, worker_name="w", kind="openai", base_url="",
                            cost_input=input_, cost_output=output,
                            cost_cached_input=cached_price, cost_cache_write=write_price)
    expected = _exact_ceiling(prompt, completion, cached, written, input_, output,
                              input_ if cached_price is None else cached_price,
                              input_ * Decimal("1.25") if write_price is None else write_price)
    assert target.upstream_cost_micros(prompt_tokens=prompt, completion_tokens=completion,
                                       cached_tokens=cached,
                                       cache_write_tokens=written) == expected
    assert math.ceil(expected) == expected


def test_a_worker_without_a_cost_price_has_an_unknown_cost_not_zero():
    target = UpstreamTarget(worker_id=1, worker_name="w", kind="openai", base_url="")
    assert target.upstream_cost_micros(prompt_tokens=10, completion_tokens=10) is None


@pytest.mark.django_db
@hsettings(max_examples=25, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(_usage(), _prices, _prices, st.booleans()),
                         min_size=1, max_size=8))
def test_recorded_margins_are_exact_to_the_micro_usd(user, price, requests):
    UsageRecord.objects.all().delete()
    wallet_credit(user=user, amount_micros=10**15,
                  idempotency_key=f"f{timezone.now().timestamp()}", memo="")
    expected: dict[str, tuple[int, int | None]] = {}
    for i, ((prompt, completion, cached, written), input_, output, known) in enumerate(requests):
        upstream = (_exact_ceiling(prompt, completion, cached, written, input_, output,
                                   input_, input_ * Decimal("1.25")) if known else None)
        hold_id = f"h{timezone.now().timestamp()}-{i}"
        hold_create(user=user, hold_id=hold_id, amount_micros=10**13, price=price,
                    model=price.model)
        outcome = hold_settle(hold_id=hold_id, usage=UsageReport(
            prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
            cache_write_tokens=written, upstream_cost_micros=upstream))
        expected[hold_id] = (outcome.charged_micros, upstream)

    records = {r.request_id: r for r in usage_with_margin(UsageRecord.objects.all())}
    for hold_id, (charged, upstream) in expected.items():
        record = records[hold_id]
        assert (record.cost_micros, record.upstream_cost_micros) == (charged, upstream)
        margin = None if upstream is None else charged - upstream
        assert request_margin_micros(record) == margin == record.margin_micros

    total = margin_total(since=timezone.now() - timedelta(hours=1))
    known = [(c, u) for c, u in expected.values() if u is not None]
    assert total.requests == len(expected)
    assert total.unknown_cost_requests == len(expected) - len(known)
    assert total.upstream_cost_micros == sum(u for _, u in known)
    assert total.margin_micros == (sum(c - u for c, u in known) if known else None)


@pytest.mark.django_db
def test_a_voided_request_records_no_upstream_cost(user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="f", memo="")
    hold_create(user=user, hold_id="v", amount_micros=1_000, price=price, model=price.model)
    outcome = hold_void(hold_id="v", usage=UsageReport(prompt_tokens=0, completion_tokens=0,
                                                       upstream_cost_micros=5))
    assert outcome.usage_record.upstream_cost_micros is None


@pytest.mark.django_db
def test_the_database_refuses_a_negative_upstream_cost(user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="f", memo="")
    hold_create(user=user, hold_id="n", amount_micros=1_000, price=price, model=price.model)
    with (pytest.raises(IntegrityError, match="billing_usage_upstream_cost_not_negative"),
          transaction.atomic()):
        hold_settle(hold_id="n", usage=UsageReport(prompt_tokens=1, completion_tokens=1,
                                                       upstream_cost_micros=-1))


# --- the request path's statements, one request and many at once ---

@pytest.fixture
def loop(settings):
    settings.ROUTER_DB_BATCHING = True
    loop = LoopThread()
    yield loop
    loop.close()


def _settle_all(loop: LoopThread, user: Any, price: Any, costs: list[int | None],
                void_every: int = 0) -> None:
    async def one(i: int, cost: int | None) -> None:
        await hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id=f"p{i}", amount_micros=1_000,
                           price_id=price.pk, model=price.model, api_key_id=None,
                           expires_at=timezone.now() + timedelta(minutes=5))
        voided = void_every and i % void_every == 0
        await hold_resolve(hold_id=f"p{i}", cost_micros=None if voided else 30,
                           usage=UsageReport(prompt_tokens=10, completion_tokens=10,
                                             worker="w", upstream_cost_micros=cost))

    async def all_at_once() -> None:
        await asyncio.gather(*(one(i, cost) for i, cost in enumerate(costs)))

    loop.run(all_at_once())


@pytest.mark.django_db(transaction=True)
def test_many_settles_in_one_statement_write_each_upstream_cost(loop, user, price):
    wallet_credit(user=user, amount_micros=10_000_000, idempotency_key="f", memo="")
    costs = [None if i % 3 == 0 else i * 7 for i in range(60)]
    _settle_all(loop, user, price, costs, void_every=5)

    async def settles() -> tuple[int, int]:
        batcher = batchers()[1]
        return batcher.batches, batcher.items

    batches, items = loop.run(settles())
    assert items == 60
    assert batches < 30
    stored = dict(UsageRecord.objects.values_list("request_id", "upstream_cost_micros"))
    assert stored == {f"p{i}": (None if i % 5 == 0 else cost) for i, cost in enumerate(costs)}


@pytest.mark.django_db(transaction=True)
def test_a_settle_alone_writes_its_upstream_cost(loop, user, price, settings):
    settings.ROUTER_DB_BATCHING = False
    wallet_credit(user=user, amount_micros=10_000_000, idempotency_key="f", memo="")
    _settle_all(loop, user, price, [41, None, 0], void_every=0)
    stored = dict(UsageRecord.objects.values_list("request_id", "upstream_cost_micros"))
    assert stored == {"p0": 41, "p1": None, "p2": 0}


# --- roll-ups and margins over a window ---

def _record(user: Any, price: Any, at: datetime, *, charged: int, upstream: int | None,
            model: str = "test-model", worker: str = "w") -> None:
    record = UsageRecord.objects.create(
        request_id=f"r{UsageRecord.objects.count()}", user=user, model=model, worker=worker,
        prompt_tokens=1, completion_tokens=1, cost_micros=charged,
        upstream_cost_micros=upstream, price=price)
    UsageRecord.objects.filter(pk=record.pk).update(created_at=at)


@pytest.mark.django_db
def test_rollups_sum_the_known_costs_and_count_the_unknown(user, make_user, price):
    other = make_user()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [(user, 0, 100, 60, "a"), (user, 1, 50, None, "a"), (other, 26, 70, 80, "b"),
            (other, 30, 10, None, "a"), (user, 49, 30, 5, "b"), (user, 49, 0, None, "b")]
    for owner, hours, charged, upstream, model in rows:
        _record(owner, price, start + timedelta(hours=hours, minutes=5), charged=charged,
                upstream=upstream, model=model, worker=model)
    usage_rollup(since=start, until=start + timedelta(days=3))

    for period in (UsageRollup.Period.HOUR, UsageRollup.Period.DAY):
        rollups = UsageRollup.objects.filter(period=period)
        assert sum(r.upstream_cost_micros for r in rollups) == 60 + 80 + 5
        assert sum(r.unknown_cost_requests for r in rollups) == 3
        assert sum(r.unknown_cost_charged_micros for r in rollups) == 50 + 10 + 0
        assert sum(r.cost_micros for r in rollups) == 260

    # Whole past days come from the roll-ups, the rest from the records: the same figures.
    now = start + timedelta(days=10)
    since = start + timedelta(minutes=30)  # a partial first day, read from the records
    for by in ("model", "user", "day", "worker"):
        from_rollups = margin_by(by=by, since=since, until=now, now=now)
        from_records = margin_by(by=by, since=since, until=now, now=start)
        assert from_rollups == from_records
    by_model = {m.key: m for m in margin_by(by="model", since=start, now=now)}
    assert (by_model["a"].margin_micros, by_model["a"].unknown_cost_requests) == (100 - 60, 2)
    assert by_model["b"].margin_micros == 70 - 80 + 30 - 5
    assert by_model["b"].unknown_cost_requests == 1


@pytest.mark.django_db
def test_a_group_whose_costs_are_all_unknown_has_an_unknown_margin(user, price):
    _record(user, price, timezone.now(), charged=90, upstream=None)
    (margin,) = margin_by(by="user", since=timezone.now() - timedelta(minutes=5))
    assert (margin.margin_micros, margin.unknown_cost_requests,
            margin.unknown_cost_charged_micros) == (None, 1, 90)
