"""Rate limits (RPM, TPM, concurrency) per key and per user: shared by every router instance
through Redis, per process without it; all or nothing across scopes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis

from proxy import limits
from proxy.ground import shared_state
from proxy.limits import (
    Admission,
    Limits,
    Scope,
    limits_admit,
    limits_correct_tokens,
    limits_error,
    limits_release,
    limits_settle,
    reset_local_limits,
)
from proxy.limits.headers import duration
from tests.openai_schema import validate

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run in a fresh event loop, with its own Redis client, as another instance would."""

    async def in_loop() -> T:
        try:
            return await scenario()
        finally:
            await shared_state.close_redis_clients()

    return asyncio.run(in_loop())


def admit(scopes: list[Scope], request_id: str, tokens: int = 0) -> Admission:
    return run(lambda: limits_admit(scopes=scopes, request_id=request_id, tokens=tokens))


def release(admission: Admission) -> None:
    run(lambda: limits_release(admission))


def key(**limits_: int) -> Scope:
    return Scope("key:1", Limits(**limits_))


def user(**limits_: int) -> Scope:
    return Scope("user:1", Limits(**limits_))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _clean(settings) -> Iterator[None]:
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    shared_state.reset_for_tests()
    reset_local_limits()
    yield
    shared_state.reset_for_tests()
    reset_local_limits()


@pytest.fixture(params=["redis", "local"])
def store(request, settings) -> str:
    """Each rule holds in Redis and in the per-process fallback alike."""
    if request.param == "local":
        settings.REDIS_URL = ""
    return request.param


@pytest.fixture
def short_window(monkeypatch) -> float:
    monkeypatch.setattr(limits, "WINDOW_SECONDS", 2.0)
    return 2.0


def test_the_request_over_the_rpm_limit_is_refused_and_its_retry_after_is_enough(
        store, short_window):
    scopes = [key(rpm=5)]
    assert all(admit(scopes, f"r{i}").allowed for i in range(5))

    refused = admit(scopes, "r5")
    assert not refused.allowed
    assert refused.refused_by == "key:1 requests per minute (RPM)"
    assert 1.5 < refused.retry_after_s <= short_window
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["retry-after-ms"] == str(round(refused.retry_after_s * 1000))
    assert not admit(scopes, "r6").allowed  # a refusal is not counted, nor is it a pass

    time.sleep(refused.retry_after_s)
    after = admit(scopes, "r7")
    assert after.allowed
    assert after.shared is (store == "redis")


def test_a_refusal_names_the_limit_the_way_openai_does(store):
    scopes = [key(rpm=1)]
    admit(scopes, "r1")
    error = limits_error(admit(scopes, "r2"))
    assert error.status == 429
    assert error.code == "rate_limit_exceeded"
    # The key is named as the client knows it, never by its database id.
    assert error.message.startswith("Rate limit reached for this API key on requests per "
                                    "minute (RPM): Limit 1, Used 1, Requested 1. Please try "
                                    "again in")
    assert "key:1" not in error.message
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(error.headers["retry-after"]) == 60
    validate(error.body(), "ErrorResponse")


@pytest.mark.parametrize(("limit", "tokens"), [
    (Limits(rpm=25), 1),
    (Limits(tpm=250), 10),
    (Limits(concurrency=25), 1),
], ids=["rpm", "tpm", "concurrency"])
def test_two_instances_hammering_one_scope_admit_exactly_the_limit(limit, tokens):
    scopes = [Scope("key:7", limit)]
    barrier = threading.Barrier(2, timeout=10)
    admitted: list[int] = []

    def instance(name: str) -> None:
        async def hammer() -> int:
            # Eight at a time: enough to interleave with the other instance, few enough
            # that opening connections does not outlast Redis's short timeouts on a busy
            # machine.
            in_flight = asyncio.Semaphore(8)

            async def one(i: int) -> Admission:
                async with in_flight:
                    return await limits_admit(scopes=scopes, request_id=f"{name}-{i}",
                                              tokens=tokens)

            barrier.wait()
            verdicts = await asyncio.gather(*(one(i) for i in range(40)))
            assert all(verdict.shared for verdict in verdicts)
            return sum(verdict.allowed for verdict in verdicts)

        admitted.append(run(hammer))

    threads = [threading.Thread(target=instance, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(admitted) == 2
    assert sum(admitted) == 25


def test_tokens_reserved_for_the_worst_case_are_corrected_to_the_actual_count(store):
    scopes = [key(tpm=1000)]
    first = admit(scopes, "r1", tokens=600)
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"

    over = admit(scopes, "r2", tokens=500)
    assert not over.allowed
    assert over.refused_by == "key:1 tokens per minute (TPM)"
    assert over.refusal is not None
    assert over.refusal.used == 600
    assert over.refusal.requested == 500

    run(lambda: limits_correct_tokens(first, actual_tokens=300))
    second = admit(scopes, "r2", tokens=500)
    assert second.allowed
    assert second.headers["x-ratelimit-remaining-tokens"] == "200"
    third = admit(scopes, "r3", tokens=250)
    assert not third.allowed
    assert third.refusal is not None
    assert third.refusal.used == 800


def test_a_tpm_refusal_waits_until_enough_tokens_have_left_the_window(store, short_window):
    scopes = [key(tpm=1000)]
    assert admit(scopes, "r1", tokens=400).allowed
    time.sleep(0.5)
    assert admit(scopes, "r2", tokens=400).allowed

    needs_first_gone = admit(scopes, "r3", tokens=500)
    needs_both_gone = admit(scopes, "r4", tokens=900)
    assert not needs_first_gone.allowed
    assert not needs_both_gone.allowed
    gap = needs_both_gone.retry_after_s - needs_first_gone.retry_after_s
    assert gap == pytest.approx(0.5, abs=0.15)

    time.sleep(needs_first_gone.retry_after_s)
    assert admit(scopes, "r3", tokens=500).allowed


def test_settling_corrects_the_tokens_and_frees_the_slot_at_once(store):
    scopes = [key(tpm=1000, concurrency=1), user(tpm=5000)]
    first = admit(scopes, "r1", tokens=600)
    assert not admit(scopes, "r2", tokens=700).allowed

    run(lambda: limits_settle(first, actual_tokens=300))
    second = admit(scopes, "r2", tokens=700)
    assert second.allowed
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    run(lambda: limits_settle(first, actual_tokens=300))  # again: nothing more is freed
    assert not admit(scopes, "r3", tokens=0).allowed


def test_admitting_and_settling_take_one_redis_round_trip_each(monkeypatch):
    from proxy.ground.redis_pipeline import PipelinedRedis

    calls: list[str] = []
    execute, send = PipelinedRedis.execute, PipelinedRedis.send

    async def counted(self, *args):
        calls.append(str(args[0]))
        return await execute(self, *args)

    def counted_now(self, *args, **options):
        calls.append(str(args[0]))
        return send(self, *args, **options)

    monkeypatch.setattr(PipelinedRedis, "execute", counted)
    monkeypatch.setattr(PipelinedRedis, "send", counted_now)
    scopes = [key(rpm=10, tpm=1000, concurrency=2), user(rpm=20, tpm=5000, concurrency=4)]

    async def one_request() -> None:
        admission = await limits_admit(scopes=scopes, request_id="r1", tokens=600)
        assert admission.allowed
        assert admission.shared
        await limits_settle(admission, actual_tokens=300)
        await limits_release(admission)  # already released: no round trip

    run(lambda: limits_admit(scopes=scopes, request_id="warm", tokens=0))  # loads the script
    calls.clear()
    run(one_request)
    assert calls == ["EVALSHA", "EVALSHA"]


def test_a_request_larger_than_the_tpm_limit_is_refused_as_never_fitting(store):
    refused = admit([key(tpm=1000)], "r1", tokens=1001)
    assert not refused.allowed
    assert refused.refusal is not None
    assert refused.refusal.never_fits
    assert refused.retry_after_s == 0
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    assert "can never fit" in limits_error(refused).message
    assert admit([key(tpm=1000)], "r2", tokens=1000).allowed


def test_concurrency_refuses_the_request_over_the_limit_until_one_is_released(store):
    scopes = [key(concurrency=2)]
    first, second = admit(scopes, "a"), admit(scopes, "b")
    assert first.allowed
    assert second.allowed

    third = admit(scopes, "c")
    assert not third.allowed
    assert third.refused_by == "key:1 concurrent requests"
    assert third.retry_after_s == limits.CONCURRENCY_RETRY_AFTER_S

    release(first)
    assert admit(scopes, "c").allowed
    release(first)  # again: frees nothing more
    assert not admit(scopes, "d").allowed
    release(third)  # a refused admission holds nothing to release
    assert not admit(scopes, "d").allowed


def test_a_slot_that_is_never_released_lapses_with_its_lease(store, settings):
    settings.ROUTER_HOLD_TTL_SECONDS = 1
    scopes = [key(concurrency=1)]
    assert admit(scopes, "crashed").allowed
    assert not admit(scopes, "next").allowed
    time.sleep(1.05)
    assert admit(scopes, "next").allowed


def test_a_request_refused_in_one_scope_is_counted_in_none(store):
    assert admit([key(rpm=10, tpm=10_000), user(rpm=2)], "r1", tokens=100).allowed
    assert admit([Scope("key:2", Limits(rpm=10)), user(rpm=2)], "r2", tokens=100).allowed

    refused = admit([key(rpm=10, tpm=10_000), user(rpm=2)], "r3", tokens=100)
    assert refused.refused_by == "user:1 requests per minute (RPM)"

    alone = admit([key(rpm=10, tpm=10_000)], "r4", tokens=100)
    assert alone.headers["x-ratelimit-remaining-requests"] == "8"  # r1 and r4
    assert alone.headers["x-ratelimit-remaining-tokens"] == "9800"


def test_a_request_refused_in_one_dimension_is_counted_in_no_other(store):
    busy = admit([user(concurrency=1)], "busy")
    refused = admit([key(rpm=10, tpm=1000, concurrency=5), user(concurrency=1)], "r1",
                    tokens=400)
    assert refused.refused_by == "user:1 concurrent requests"

    release(busy)
    alone = admit([key(rpm=10, tpm=1000, concurrency=1)], "r2", tokens=400)
    assert alone.allowed  # the key's one slot was not taken by the refused request
    assert alone.headers["x-ratelimit-remaining-requests"] == "9"
    assert alone.headers["x-ratelimit-remaining-tokens"] == "600"


def test_the_headers_describe_the_scope_with_the_least_room(store):
    scopes = [key(rpm=100, tpm=1000), user(rpm=3, tpm=50_000)]
    allowed = admit(scopes, "r1", tokens=300)
    assert allowed.headers == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "700",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    admit(scopes, "r2", tokens=100)
    admit(scopes, "r3", tokens=100)
    refused = admit(scopes, "r4", tokens=100)
    assert refused.refused_by == "user:1 requests per minute (RPM)"
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "500"
    reset = refused.headers["x-ratelimit-reset-requests"]
    assert reset == "1m0s" or 50 < float(reset.removesuffix("s")) < 60


def test_headers_leave_out_a_dimension_no_scope_limits(store):
    assert set(admit([key(rpm=5, concurrency=2)], "r1").headers) == {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests"}
    unlimited = admit([key(), user()], "r2")
    assert unlimited.allowed
    assert unlimited.headers == {}


@pytest.mark.parametrize(("ms", "text"), [
    (0, "0s"), (20, "20ms"), (999, "999ms"), (1000, "1s"), (1500, "1.5s"), (59_900, "59.9s"),
    (60_000, "1m0s"), (360_000, "6m0s"), (61_250, "1m1.25s"), (3_600_000, "1h0m0s"),
])
def test_durations_are_written_as_openai_writes_them(ms, text):
    assert duration(ms) == text


def test_without_redis_each_process_keeps_its_own_limits_and_warns(settings, caplog,
                                                                   monkeypatch):
    monkeypatch.setattr(shared_state, "_last_warning", 0.0)
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"  # nothing answers there
    scopes = [key(rpm=2, concurrency=5)]
    admissions = [admit(scopes, f"r{i}") for i in range(3)]
    assert [a.allowed for a in admissions] == [True, True, False]
    assert not any(a.shared for a in admissions)
    assert "counted per process" in caplog.text


def test_slots_released_while_redis_was_down_are_freed_in_redis_when_it_is_back(settings):
    working = settings.REDIS_URL
    scopes = [key(concurrency=1)]
    held = admit(scopes, "held")
    assert held.allowed
    assert held.shared

    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    shared_state.reset_for_tests()
    release(held)  # Redis does not answer: kept for later
    during = admit(scopes, "during")  # requests keep flowing, counted in this process
    assert during.allowed
    assert not during.shared
    release(during)

    settings.REDIS_URL = working
    shared_state.reset_for_tests()
    after = admit(scopes, "after")
    assert after.allowed
    assert after.shared


def test_a_settle_not_waited_for_counts_before_the_next_admission():
    """The end of a request writes its settle and goes on without the reply; the next
    admission, on the same connection, comes after it: a client at its concurrency limit
    calling one request after another is never refused for the one that just ended."""
    scopes = [key(concurrency=1)]

    async def back_to_back() -> list[bool]:
        admitted = []
        for number in range(20):
            admission = await limits_admit(scopes=scopes, request_id=f"r{number}", tokens=0)
            admitted.append(admission.allowed)
            await limits_settle(admission, actual_tokens=0)
        return admitted

    run(lambda: limits_admit(scopes=[key(rpm=1)], request_id="warm", tokens=0))
    assert run(back_to_back) == [True] * 20


def test_a_settle_whose_reply_never_comes_keeps_its_slots_for_later(monkeypatch, caplog,
                                                                     settings):
    """Redis does not answer the settle in time: the slots it freed are kept and freed again
    with the next command that reaches Redis, and the process counts locally meanwhile."""
    monkeypatch.setattr(shared_state, "REDIS_TIMEOUT_SECONDS", 0.2)
    scopes = [key(concurrency=1)]
    admin = redis.Redis.from_url(settings.REDIS_URL)

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        admission = await limits_admit(scopes=scopes, request_id="r1", tokens=0)
        assert admission.allowed
        assert admission.shared
        admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
        await limits_settle(admission, actual_tokens=0)  # returns without the reply
        kept = list(limits._unreleased)
        await asyncio.sleep(0.35)  # the reply is overdue (0.2 s and 0.05 s of grace)
        return kept, list(limits._unreleased)

    before, after = run(scenario)
    assert before == []
    assert [request_id for _, request_id in after] == ["r1"]
    assert "Redis is not answering" in caplog.text


@pytest.mark.parametrize(("limits_", "written_at_once"),
                         [({"concurrency": 2, "tpm": 1000}, True), ({"tpm": 1000}, False)])
def test_a_settle_that_frees_a_concurrency_slot_is_written_before_the_caller_goes_on(
    limits_, written_at_once
):
    """Freeing a client's concurrency slot must reach Redis before the answer reaches the
    client, whichever instance takes its next request; a token count alone goes with the
    other commands of the loop's turn (one write for many)."""
    scopes = [key(**limits_)]

    async def scenario() -> bool:
        admission = await limits_admit(scopes=scopes, request_id="r1", tokens=600)
        await limits_settle(admission, actual_tokens=300)
        link = shared_state.redis_client()._link
        return not link.outgoing

    run(lambda: limits_admit(scopes=[key(rpm=1)], request_id="warm", tokens=0))
    assert run(scenario) is written_at_once
