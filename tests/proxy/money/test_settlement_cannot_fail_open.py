"""Whatever fails while a charge is computed or written, the request resolves its own hold
at once, charging the router's own count, and says so."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.errors import DatabaseUnavailable
from billing.models import Hold, UsageRecord, Wallet
from billing.services import UsageReport, wallet_credit
from billing.services.hot_path import hold_reserve
from proxy.ground.metrics import SETTLE_FAILURES
from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from proxy.money import Verdict, hold_keeper, settlement, wait_for_settlements
from proxy.relay import call as call_module
from tests.loop_thread import LoopThread
from tests.proxy.money.conftest import MESSAGES, answer_text, settled
from tests.wallet_ids import wallet_id_of

PROMPT = exact_prompt_tokens(MESSAGES)


def _failures(fallback: str) -> float:
    return SETTLE_FAILURES.labels(fallback)._value.get()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_usage_the_database_refuses_is_charged_as_the_routers_own_count(
    liar_worker, liar, make_key, client_for, monkeypatch, stream
):
    """Say a check let through a count the usage record cannot store: the settle fails,
    and the router charges what it counted instead of leaving the hold to the sweeper."""
    monkeypatch.setattr(call_module, "check_usage",
                        lambda **_: Verdict(PROMPT, 10**12, 0, "", None))
    before = _failures("charge")
    _, secret = make_key()
    text = answer_text(client_for(secret), stream=stream)
    record = settled()
    assert (record.prompt_tokens, record.completion_tokens) == (
        PROMPT, count_text_tokens(text))
    assert record.cost_micros == PROMPT + 2 * record.completion_tokens
    assert (record.source, record.estimate_reason) == ("estimated", "settle_error")
    assert _failures("charge") == before + 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_bug_while_checking_usage_still_charges_the_output_delivered(
    liar_worker, liar, make_key, client_for, monkeypatch, stream
):
    def broken(**_: object) -> Verdict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(call_module, "check_usage", broken)
    _, secret = make_key()
    text = answer_text(client_for(secret), stream=stream)
    record = settled()
    assert record.completion_tokens == count_text_tokens(text) > 0
    assert (record.source, record.estimate_reason) == ("estimated", "settle_error")


@pytest.mark.django_db(transaction=True)
def test_a_hold_its_request_left_behind_is_released_at_the_keepers_next_round(user, price):
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")

    async def scenario() -> int:
        async def forgetful_request() -> None:
            await hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id="orphan", amount_micros=500,
                               price_id=price.pk, model=price.model, api_key_id=None,
                               expires_at=timezone.now() + timedelta(minutes=15))
            hold_keeper().add("orphan")  # and then it ends without resolving it

        await asyncio.ensure_future(forgetful_request())
        return await hold_keeper().resolve_orphans()

    loop = LoopThread()
    try:
        assert loop.run(scenario()) == 1
    finally:
        loop.close()
    assert Hold.objects.get().status == "voided"
    record = UsageRecord.objects.get()
    assert (record.cost_micros, record.estimate_reason) == (0, "settle_error")


@pytest.mark.django_db(transaction=True)
def test_a_settlement_someone_waits_for_is_not_held_up_while_the_database_is_away(
    user, price, monkeypatch
):
    """A stream's last chunk waits for its charge. With the database away, the caller is
    told the charge after one try, and the charge is written in the background as soon as
    the database answers again: once, at that amount."""
    wallet_credit(user=user, amount_micros=10_000, idempotency_key="f", memo="")
    real = settlement.hold_resolve
    refusals = [3]  # the caller's try, then two in the background

    async def away_at_first(**kwargs: object) -> int | None:
        if refusals[0]:
            refusals[0] -= 1
            raise DatabaseUnavailable("connection refused")
        return await real(**kwargs)

    monkeypatch.setattr(settlement, "hold_resolve", away_at_first)
    monkeypatch.setattr(settlement, "SETTLE_RETRY_DELAYS_S", (0.2,))
    usage = UsageReport(prompt_tokens=10, completion_tokens=20, worker="w")
    loop = LoopThread()
    try:
        loop.run(hold_reserve(wallet_id=wallet_id_of(user.pk), hold_id="waited", amount_micros=210,
                              price_id=price.pk, model=price.model, api_key_id=None,
                              expires_at=timezone.now() + timedelta(minutes=5)))
        started = time.monotonic()
        charged = loop.run(settlement.settle(request_id="waited", wallet_id=wallet_id_of(user.pk),
                                             price=price, usage=usage,
                                             fallback=lambda: usage))
        assert time.monotonic() - started < 0.2  # no pause: the retries are not its
        assert (charged, Hold.objects.get().status) == (10 * 1 + 20 * 2, "pending")
        loop.run(wait_for_settlements())
    finally:
        loop.close()
    assert refusals == [0]
    assert (Hold.objects.get().status, UsageRecord.objects.get().cost_micros) == ("posted", 50)
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (10_000 - 50, 0)
