"""A router process killed in the middle of a stream (SIGKILL, as an out-of-memory kill or
a process manager's is): the next process charges what the stream delivered, up to its last
checkpoint (``proxy.money.checkpoints``).

Until 2026-12 nothing of it was charged: the charge was written only at the stream's end,
so the process took it with it, and the sweeper released the hold uncharged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from tests.proxy.upstream import UpstreamServer, plan_completion
from tests.router_processes import SERVE_WEB, StreamReader, router_processes, serve_web_env, until

CHECKPOINT_MS = 200
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 400}


def _checkpoints(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    return [orjson.loads(line) for path in directory.glob("charges-*.jsonl")
            for line in path.read_bytes().splitlines() if line.strip()]


def test_a_stream_whose_process_is_killed_is_charged_up_to_its_last_checkpoint(
    openai_worker, upstream: UpstreamServer, make_key, transactional_db, tmp_path
):
    # Four hundred words at 50 ms each: 20 s, killed a few seconds in.
    upstream.configure(reply=" ".join(["word"] * 400), chunk_delay=0.05)
    user_id, secret = make_key()
    spool = tmp_path / "spool"
    env = serve_web_env(ROUTER_CHARGE_SPOOL_DIR=str(spool),
                        ROUTER_STREAM_CHECKPOINT_MS=str(CHECKPOINT_MS))
    with router_processes(1, env, SERVE_WEB) as (first,):
        reader = StreamReader(openai.OpenAI(base_url=first.base_url, api_key=secret,
                                            max_retries=0, timeout=60), BODY)
        reader.start()
        until("40 words delivered", lambda: len(reader.received) >= 40)
        first.process.kill()
        first.process.wait(10)
        reader.join(30)
    delivered = len(reader.received)
    assert delivered < 400
    hold = Hold.objects.get()
    assert hold.status == "pending"  # nothing charged it before it died
    last = [line for line in _checkpoints(spool) if line["hold_id"] == hold.id][-1]
    # About a checkpoint period behind what the client received (4 words at 50 ms each),
    # with room for the timer's lateness on a loaded machine (a second in all).
    assert delivered - 20 <= last["usage"]["completion_tokens"]
    assert last["usage"]["completion_tokens"] <= delivered + 1  # one in flight, at most

    with router_processes(1, env, SERVE_WEB):
        # The next process replays the dead one's spool at its start.
        until("the stream charged by the next process",
              lambda: UsageRecord.objects.filter(request_id=hold.id).exists())
        until("the spool file deleted", lambda: not list(spool.glob("charges-*.jsonl")))
    record = UsageRecord.objects.get(request_id=hold.id)
    prompt = plan_completion({**BODY, "model": "gpt-4o-mini"}, "x").prompt_tokens
    assert record.completion_tokens == last["usage"]["completion_tokens"]
    assert (record.prompt_tokens, record.status, record.source) == (
        prompt, "cancelled", "estimated")
    assert record.cost_micros == prompt + 2 * record.completion_tokens
    hold.refresh_from_db()
    assert (hold.status, hold.charged_micros) == ("posted", record.cost_micros)
    assert list(LedgerEntry.objects.filter(kind="charge").values_list(
        "amount_micros", flat=True)) == [-record.cost_micros]
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)
