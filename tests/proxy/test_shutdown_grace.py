"""A deploy while a long stream runs: ``make serve``'s web server (``serve.py web``) stops
on SIGTERM within ``WEB_SHUTDOWN_GRACE_SECONDS``, cutting the streams still running, and
charges what each delivered before it exits.

Until 2026-12 it waited for every stream to end, however long: a process manager that
kills after its own grace period (Kubernetes' 30 s, ``docker stop``'s 10 s) killed it in
the middle, and the output those streams had delivered was never charged (the sweeper
released their holds).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

import openai
import pytest

from billing.models import Hold, UsageRecord, Wallet
from tests.proxy.upstream import UpstreamServer, plan_completion
from tests.router_processes import SERVE_WEB, StreamReader, router_processes, serve_web_env, until

# The process manager's own grace, after which it kills: longer than the router's.
MANAGER_GRACE_S = 8.0
ROUTER_GRACE_S = 1
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 400}


@pytest.fixture
def slow_stream(upstream: UpstreamServer) -> UpstreamServer:
    # Four hundred words at 50 ms each: 20 s, longer than either grace.
    upstream.configure(reply=" ".join(["word"] * 400), chunk_delay=0.05)
    return upstream


def test_a_deploy_cuts_a_long_stream_after_its_grace_and_charges_what_it_delivered(
    openai_worker, slow_stream, make_key, transactional_db
):
    user_id, secret = make_key()
    env = serve_web_env(WEB_SHUTDOWN_GRACE_SECONDS=str(ROUTER_GRACE_S))
    with router_processes(1, env, SERVE_WEB) as (router,):
        reader = StreamReader(openai.OpenAI(base_url=router.base_url, api_key=secret,
                                            max_retries=0, timeout=60), BODY)
        reader.start()
        until("the stream started", lambda: len(reader.received) >= 10, seconds=20)
        term_at = time.monotonic()
        router.process.send_signal(signal.SIGTERM)  # a deploy
        with contextlib.suppress(subprocess.TimeoutExpired):
            router.process.wait(MANAGER_GRACE_S)
        exited = router.process.poll() is not None
        if not exited:
            router.process.kill()  # the process manager's grace is over
        reader.join(30)
    assert exited, f"still running {MANAGER_GRACE_S} s after SIGTERM: killed"
    assert reader.ended_at is not None
    assert reader.ended_at - term_at < MANAGER_GRACE_S
    delivered = len(reader.received)
    assert delivered < 400  # cut short, not run to its end
    hold = Hold.objects.get()
    record = UsageRecord.objects.get(request_id=hold.id)
    # The prompt and the words delivered (one token each here), at 1 and 2 micro-USD; the
    # router counts what it relayed, so a word in flight at the cut may be counted.
    prompt = plan_completion({**BODY, "model": "gpt-4o-mini"}, "x").prompt_tokens
    assert record.completion_tokens in (delivered, delivered + 1)
    assert record.cost_micros == prompt + 2 * record.completion_tokens
    assert hold.status == "posted"
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)
