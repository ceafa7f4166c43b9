"""The money guarantees hold on /v1/messages as on chat: a client that hangs up pays for
what was produced, a balance for N answers lets exactly N through, and a native stream
the meter cuts at the router's cap goes out cut, in Anthropic's events."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import orjson

from billing.models import Hold, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from proxy.dialects.base import NATIVE
from proxy.dialects.messages.native import NativeEvents
from proxy.dialects.messages.request import parse_messages_request
from proxy.dialects.messages.stream import MessagesStream
from proxy.ground.tokens import encode_text
from proxy.money import OutputMeter
from proxy.money.plan import capped_plan
from tests.concurrency import run_concurrently
from tests.proxy.anthropic.messages_api import Answer, stream_events
from tests.proxy.anthropic.samples import sample_events

LONG_REPLY = " ".join(f"word{i}" for i in range(300))
ASK = {"model": "claude-test", "max_tokens": 400, "stream": True,
       "messages": [{"role": "user", "content": "Tell me a long story."}]}


def test_a_client_that_drops_a_native_stream_pays_for_what_was_produced(
    anthropic_worker, anthropic_upstream, make_key, router
):
    anthropic_upstream.configure(reply=LONG_REPLY, chunk_delay=0.05)
    user_id, secret = make_key()
    with httpx.stream("POST", f"{router.url}/v1/messages", json=ASK, timeout=20,
                      headers={"x-api-key": secret}) as response:
        deltas = 0
        for line in response.iter_lines():
            deltas += line.startswith("event: content_block_delta")
            if deltas == 3:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 5
    while Hold.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.status, record.source) == (
        "messages", "cancelled", "estimated")
    assert 3 <= record.completion_tokens < len(encode_text(LONG_REPLY)) // 2
    # 3 and 15 micro-USD per input and output token.
    assert record.cost_micros == record.prompt_tokens * 3 + record.completion_tokens * 15
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - record.cost_micros, 0)


def test_concurrent_messages_against_a_balance_for_exactly_10_let_10_through(
    openai_worker, upstream, make_key, router, settings, model_price
):
    settings.ROUTER_RESERVE_WAIT_MS = 0
    body = {"model": "test-model", "max_tokens": 20,
            "messages": [{"role": "user", "content": "Tell me a story."}]}
    hold = capped_plan(parse_messages_request(orjson.dumps(body), {}), model_price)
    assert hold is not None
    user_id, secret = make_key(credit_micros=10 * hold.amount_micros)
    upstream.configure(first_byte_delay=1.5)  # every call reserves before one settles
    client = anthropic.Anthropic(base_url=router.url, api_key=secret, max_retries=0,
                                 timeout=20)

    results = run_concurrently(lambda: client.messages.create(**body),
                               [() for _ in range(40)], threads=40)

    succeeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, anthropic.PaymentRequiredError)]
    assert (len(succeeded), len(refused)) == (10, 30)
    router.drain()
    wallet = Wallet.objects.get(user_id=user_id)
    charged = sum(-e.amount_micros for e in LedgerEntry.objects.filter(kind="charge"))
    assert LedgerEntry.objects.filter(kind="charge").count() == 10
    assert wallet.posted_micros == 10 * hold.amount_micros - charged >= 0
    assert wallet.pending_micros == 0
    assert wallet_audit(wallet_id=wallet.pk).consistent


class _Call:
    """What MessagesStream reads of a call."""

    class chat:
        model = "claude-test"
        native: dict = {}


def _render(events: list[dict], allowance: int) -> list[dict]:
    """The events a client gets for an upstream's ``events`` metered at ``allowance``."""
    translator = NativeEvents(model="claude-x", worker="w")
    meter = OutputMeter(allowance=allowance, n=1)
    render = MessagesStream(_Call())  # type: ignore[arg-type]
    out: list[bytes] = []
    for item in events:
        for chunk in translator.feed(item):
            chunk.pop("usage", None)
            if chunk.get("choices"):
                if meter.meter_chunk(chunk):
                    out += render.chunk(chunk)
                if meter.exhausted:
                    break
            elif NATIVE in chunk:
                out += render.aside(chunk)
        if meter.exhausted:
            break
    out += asyncio.run(render.closing(_Call(), {"prompt_tokens": 9, "completion_tokens": 4},  # type: ignore[arg-type]
                                      0, {}))
    return [orjson.loads(part.split(b"data: ", 1)[1]) for part in out]


def test_a_native_stream_goes_out_event_for_event_when_nothing_is_cut():
    events = sample_events(text="Hello there", tool=True, stop="tool_use",
                           usage={"input_tokens": 9, "output_tokens": 12})
    sent = _render(events, allowance=100)
    expected = [e for e in events if e["type"] not in ("message_delta", "message_stop")]
    expected[0] = {**expected[0], "message": {**expected[0]["message"],
                                              "model": "claude-test"}}
    assert sent[:-2] == expected
    assert sent[-2]["delta"]["stop_reason"] == "tool_use"
    assert sent[-2]["usage"]["input_tokens"] == 9
    assert sent[-1] == {"type": "message_stop"}


def test_a_native_stream_cut_by_the_meter_ends_at_max_tokens_with_its_block_closed():
    text = " ".join(f"word{i}" for i in range(40))
    answer = Answer(message={"id": "msg_c", "type": "message", "role": "assistant",
                             "model": "claude-x", "content": [{"type": "text", "text": text}],
                             "stop_reason": "end_turn", "stop_sequence": None,
                             "usage": {"input_tokens": 9, "output_tokens": 41}},
                    text_pieces=[text[i:i + 6] for i in range(0, len(text), 6)])
    sent = _render(stream_events(answer), allowance=4)
    kinds = [e["type"] for e in sent]
    assert kinds[0] == "message_start"
    assert kinds[-3:] == [
        "content_block_stop", "message_delta", "message_stop"]
    delivered = "".join(e["delta"]["text"] for e in sent if e["type"] == "content_block_delta")
    assert text.startswith(delivered)
    assert len(encode_text(delivered)) <= 4 + 2
    assert sent[-2]["delta"]["stop_reason"] == "max_tokens"
    assert {e.get("index") for e in sent if "index" in e} == {0}
