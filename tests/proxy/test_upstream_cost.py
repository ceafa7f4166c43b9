"""Through the live router, every request's usage record carries what the worker's upstream
charges us for it (its cost version in force), beside what we charged."""

from __future__ import annotations

from decimal import Decimal

from billing.models import UsageRecord
from proxy.costs import cost_current, cost_set
from tests.concurrency import run_concurrently
from tests.live_router import wait_for_charges

MESSAGES = [{"role": "user", "content": "Say something."}]


def _expected(record: UsageRecord, input_: str, output: str, cached: str) -> int:
    """Computed here independently: the exact Decimal sum, rounded up once."""
    exact = ((record.prompt_tokens - record.cached_tokens) * Decimal(input_)
             + record.cached_tokens * Decimal(cached)
             + record.completion_tokens * Decimal(output))
    whole = int(exact)
    return whole + (1 if exact > whole else 0)


def _records() -> list[UsageRecord]:
    wait_for_charges()
    return list(UsageRecord.objects.order_by("created_at", "id"))


def test_a_request_records_the_exact_upstream_cost_beside_its_charge(
        openai_worker, upstream, make_key, client_for):
    cost_set(worker=openai_worker, model="test-model", input="3.3", output="7.000001",
             cached_input="0.123457")
    upstream.configure(cached_tokens=4)
    _, secret = make_key()
    client = client_for(secret)
    client.chat.completions.create(model="test-model", messages=MESSAGES)
    list(client.chat.completions.create(model="test-model", messages=MESSAGES, stream=True))

    records = _records()
    assert len(records) == 2
    for record in records:
        assert record.cached_tokens == 4
        assert record.completion_tokens > 0
        assert record.upstream_cost_micros == _expected(record, "3.3", "7.000001", "0.123457")
        assert record.cost_micros > 0  # our own charge, at our own price, stays beside it


def test_a_worker_without_a_cost_price_records_an_unknown_cost(
        openai_worker, make_key, client_for):
    _, secret = make_key()
    client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    (record,) = _records()
    assert record.cost_micros > 0
    assert record.upstream_cost_micros is None


def test_a_new_cost_version_applies_to_later_requests_only(openai_worker, make_key,
                                                           client_for):
    cost_set(worker=openai_worker.name, model="test-model", input="1", output="1")
    _, secret = make_key()
    client = client_for(secret)
    client.chat.completions.create(model="test-model", messages=MESSAGES)
    first = _records()[0]

    cost_set(worker=openai_worker.name, model="test-model", input="10", output="20")
    assert cost_current(worker=openai_worker, model="test-model").input_usd_per_mtok == 10
    client.chat.completions.create(model="test-model", messages=MESSAGES)

    old, new = _records()
    assert old.pk == first.pk
    assert old.upstream_cost_micros == first.upstream_cost_micros
    assert old.upstream_cost_micros == _expected(old, "1", "1", "1")
    assert new.upstream_cost_micros == _expected(new, "10", "20", "10")


def test_requests_settled_together_each_record_their_upstream_cost(
        openai_worker, make_key, client_for):
    cost_set(worker=openai_worker, model="test-model", input="0.7", output="1.3")
    _, secret = make_key(credit_micros=100_000_000)
    client = client_for(secret)

    def ask(i: int) -> None:
        client.chat.completions.create(model="test-model", max_tokens=5 + i,
                                       messages=[{"role": "user", "content": f"Count {i}."}])

    results = run_concurrently(ask, [(i,) for i in range(24)])
    assert not [r for r in results if isinstance(r, BaseException)]
    records = _records()
    assert len(records) == 24
    for record in records:
        assert record.upstream_cost_micros == _expected(record, "0.7", "1.3", "0.7")
