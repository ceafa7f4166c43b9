"""Requests refused for money (402) or a limit (429) show in the user's usage, counted per
key and minute, at no charge, without a database write per refusal."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import openai
import pytest

from accounts.models import ApiKey
from billing.models import Hold, LedgerEntry, RefusedRequests, UsageRecord, Wallet
from billing.services import key_budget_set
from billing.services.refusals import RefusalCount, refusals_record
from proxy.ground.metrics import REFUSALS_DROPPED
from proxy.money import refusals
from proxy.money.refusals import RefusalTally

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(autouse=True)
def _refused_at_once(settings, refusals_in_one_minute):
    settings.ROUTER_RESERVE_WAIT_MS = 0  # a 402 at once, not after the holds in flight settle


def test_refusals_for_money_are_counted_per_key_and_minute_and_never_charged(
    openai_worker, make_key, client_for, router
):
    user_id, secret = make_key(credit_micros=10)
    errors = []
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as refused:
            client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
        errors.append(refused.value)
    router.drain()

    group = RefusedRequests.objects.get()
    assert (group.user_id, group.status, group.reason, group.model, group.endpoint,
            group.count) == (user_id, 402, "balance", "test-model", "chat", 3)
    assert group.api_key.prefix == secret[:18]
    assert group.message == errors[-1].body["message"]
    assert group.last_request_id == errors[-1].response.headers["x-request-id"]
    assert group.minute.second == group.minute.microsecond == 0
    assert not UsageRecord.objects.exists()
    assert not Hold.objects.exists()
    assert LedgerEntry.objects.filter(wallet__user_id=user_id).count() == 1  # the top-up
    assert Wallet.objects.get(user_id=user_id).posted_micros == 10


def test_a_key_over_its_rpm_limit_shows_its_429s_beside_the_answer_it_got(
    openai_worker, make_key, client_for, router
):
    user_id, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=1)
    client = client_for(secret)
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    router.drain()

    assert UsageRecord.objects.filter(user_id=user_id).count() == 1
    group = RefusedRequests.objects.get()
    assert (group.status, group.reason, group.count) == (429, "rate_limit", 2)
    assert "Rate limit reached" in group.message


def test_a_key_at_its_spend_cap_is_told_apart_from_an_empty_wallet(
    openai_worker, make_key, client_for, router
):
    _, secret = make_key()
    key_budget_set(api_key=ApiKey.objects.get(prefix=secret[:18]), lifetime_limit_micros=5,
                   monthly_limit_micros=None)
    with pytest.raises(openai.APIStatusError):
        client_for(secret).responses.create(model="test-model", input="Hello")
    router.drain()

    group = RefusedRequests.objects.get()
    assert (group.status, group.reason, group.endpoint) == (402, "key_cap", "responses")
    assert "spend cap" in group.message


def test_refusals_are_written_together_later_not_one_insert_each(
    openai_worker, make_key, client_for, router, settings
):
    settings.ROUTER_REFUSALS_FLUSH_MS = 60_000
    _, secret = make_key(credit_micros=10)
    for _ in range(20):
        with pytest.raises(openai.APIStatusError):
            client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    # Twenty refusals, and not a row yet: they are counted in memory...
    assert not RefusedRequests.objects.exists()
    router.drain()  # ...and written in one statement when the process flushes (or stops).
    assert RefusedRequests.objects.get().count == 20


def test_refusals_either_side_of_a_minute_turn_are_two_groups(
    openai_worker, make_key, client_for, router, refusals_in_one_minute
):
    _, secret = make_key(credit_micros=10)
    first = refusals_in_one_minute.minute
    for turned in (False, True, False):
        if turned:
            refusals_in_one_minute.minute = first + timedelta(minutes=1)
        with pytest.raises(openai.APIStatusError):
            client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    router.drain()
    groups = RefusedRequests.objects.order_by("minute").values_list("minute", "count")
    assert list(groups) == [(first, 1), (first + timedelta(minutes=1), 2)]


@pytest.mark.django_db(transaction=True)
def test_two_processes_counting_the_same_group_add_up(make_key):
    user_id, secret = make_key(credit_micros=0)
    key_id = ApiKey.objects.get(prefix=secret[:18]).pk
    minute = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)
    start = threading.Barrier(8)

    def count_fifty() -> None:
        start.wait()
        for i in range(50):
            refusals_record(counts=[RefusalCount(
                user_id=user_id, api_key_id=key_id, minute=minute, status=402,
                reason="balance", model="test-model", endpoint="chat", count=1,
                message="no money", last_request_id=f"req_{i}")])

    threads = [threading.Thread(target=count_fifty) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert RefusedRequests.objects.get().count == 400


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_group_with_an_unknown_status(make_key):
    from django.db import IntegrityError

    user_id, secret = make_key(credit_micros=0)
    key_id = ApiKey.objects.get(prefix=secret[:18]).pk
    with pytest.raises(IntegrityError):
        RefusedRequests.objects.create(
            user_id=user_id, api_key_id=key_id, minute=datetime.now(UTC), status=500,
            reason="balance", model="m", count=1, message="", last_request_id="r")


def test_counts_stay_bounded_whatever_a_client_sends(monkeypatch):
    monkeypatch.setattr(refusals, "MAX_GROUPS", 2)
    before = REFUSALS_DROPPED._value.get()
    minute = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)

    async def note_three_models() -> dict:
        tally = RefusalTally()
        for model in ("a", "b", "c", "a"):
            tally.note((1, minute, 402, "balance", model, "chat"), 1, "no money", "req")
        tally.scheduled.cancel()
        return tally.groups

    groups = asyncio.run(note_three_models())
    assert {key[4]: group.count for key, group in groups.items()} == {"a": 2, "b": 1}
    assert REFUSALS_DROPPED._value.get() == before + 1
