"""A request that runs longer than a hold's time to live still settles in full: its hold is
kept alive while it runs, so the sweeper never releases money a live stream will charge."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.services.sweeper import holds_sweep
from tests.live_router import wait_for_charges

MESSAGES = [{"role": "user", "content": "Say something long."}]
HOLD_TTL = 3.0


@pytest.fixture
def short_hold_ttl(settings):
    # Real deployments keep holds for minutes; three seconds makes an 8-second stream
    # outlive its hold more than twice over, and leaves the keeper two seconds to spare
    # (two thirds of the TTL) on a loaded machine: at 1.5 s with a third to spare, a CI run
    # once saw the sweeper take the hold.
    settings.ROUTER_HOLD_TTL_SECONDS = HOLD_TTL


def _sweep_until(stop: threading.Event, expired: list[str]) -> None:
    while not stop.is_set():
        expired.extend(holds_sweep().expired)
        time.sleep(0.1)


def test_a_stream_longer_than_the_hold_ttl_is_charged_in_full_despite_the_sweeper(
    short_hold_ttl, openai_worker, upstream, make_key, client_for
):
    user_id, secret = make_key()
    words = " ".join(f"w{i}" for i in range(20))
    upstream.configure(reply=words, chunk_delay=0.2)  # 40 tokens: 8 s from first to last
    stop, expired = threading.Event(), []
    sweeper = threading.Thread(target=_sweep_until, args=(stop, expired))
    sweeper.start()
    try:
        started = time.monotonic()
        stream = client_for(secret).chat.completions.create(
            model="test-model", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
        took = time.monotonic() - started
        # The stream's end goes while its charge is written: the sweeper runs on until it
        # is.
        wait_for_charges()
    finally:
        stop.set()
        sweeper.join()

    assert took > 2 * HOLD_TTL  # well past the TTL, or the test proves nothing
    assert expired == []
    usage = chunks[-1].usage
    record = UsageRecord.objects.get()
    assert record.status == UsageRecord.Status.OK
    assert record.completion_tokens == usage.completion_tokens > 0
    hold = Hold.objects.get()
    assert hold.status == Hold.Status.POSTED
    assert hold.expires_at > hold.created_at + timedelta(seconds=HOLD_TTL)  # it was extended
    charge = LedgerEntry.objects.get(kind="charge")
    assert -charge.amount_micros == record.cost_micros > 0
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - record.cost_micros, 0)
