"""The upstream starts on a request while its hold's commit reaches the disk, and nothing of
the answer reaches the client before it has: a hold PostgreSQL never wrote (a crash, a
commit refused) cannot have an answer given for it. Through the official client, whole
answers and streams."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from billing.models import Hold, UsageRecord, Wallet
from billing.selectors import wallet_audit
from tests.live_router import wait_for_charges
from tests.proxy.money.conftest import answer_text, settled
from tests.reservation_commits import REFUSE, SLEEP, at_reservation_commit

COMMIT_SECONDS = 0.6

pytestmark = pytest.mark.usefixtures("liar_worker")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_upstream_works_while_the_hold_commits_and_the_answer_waits_for_the_commit(
    liar, make_key, client_for, stream
):
    user_id, secret = make_key()
    upstream_at: list[float] = []
    done = threading.Event()

    def watch_upstream() -> None:
        while not done.is_set() and not liar.sent:
            time.sleep(0.005)
        upstream_at.append(time.monotonic())

    watcher = threading.Thread(target=watch_upstream)
    with at_reservation_commit(SLEEP.format(seconds=COMMIT_SECONDS)):
        started = time.monotonic()
        watcher.start()
        text = answer_text(client_for(secret), stream=stream, max_tokens=50)
        answered = time.monotonic()
        done.set()
        watcher.join()
    assert text
    # The upstream had the request while the commit was still being made (it answers in
    # milliseconds), and the client had nothing before the commit was done.
    assert answered - upstream_at[0] >= COMMIT_SECONDS / 2
    assert answered - started >= COMMIT_SECONDS
    record = settled()
    assert (record.status, record.cost_micros > 0) == ("ok", True)
    wallet = Wallet.objects.get(user_id=user_id)
    assert wallet.posted_micros == 1_000_000 - record.cost_micros


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_answer_whose_hold_never_reached_the_disk_is_not_given(
    liar, make_key, client_for, stream
):
    """The reservation's statement granted the hold, the upstream was asked, and the
    commit was refused: the client gets a 503 and not one token; nothing is charged or
    left held."""
    user_id, secret = make_key()
    with at_reservation_commit(REFUSE), pytest.raises(openai.APIStatusError) as refused:
        answer_text(client_for(secret), stream=stream, max_tokens=50)
    assert refused.value.status_code == 503
    assert refused.value.body["type"] == "service_unavailable"  # OpenAI's error shape
    wait_for_charges(timeout=5)
    assert not Hold.objects.exists()
    assert not UsageRecord.objects.exists()
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000, 0)
    assert wallet_audit(wallet_id=wallet.pk).consistent
    # The router still works: the next request, with the database willing, is answered.
    assert answer_text(client_for(secret), stream=stream, max_tokens=50)
    settled()
