"""What a running stream's checkpoint costs the router (``proxy.money.checkpoints``), beside
what the same stream costs to meter its chunks, measured in one run.

    .venv/bin/python bench/checkpoint_cost.py [--streams 2000] [--chunks 20] [--prompt-words 200]

Each stream is a real ``Call`` (the embedded default's settings, nothing sent anywhere): its
chunks are metered as the relay meters them, and it is checkpointed after every ``--chunks``
chunks, as a stream delivering that many chunks per ``ROUTER_STREAM_CHECKPOINT_MS`` would
be. Reported: the median CPU of a stream's first checkpoint (which counts its prompt), of
a later one, of a checkpoint with nothing new (the timer's scan), and of metering
``--chunks`` chunks, the baseline; with the ratio of each to that baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
for name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(name, None)  # the embedded default: nothing here touches either

import django  # noqa: E402
import orjson  # noqa: E402

django.setup()

from billing.models import ModelPrice  # noqa: E402
from proxy.dialects.chat.request import parse_chat_request  # noqa: E402
from proxy.limits import Admission  # noqa: E402
from proxy.money import capped_plan  # noqa: E402
from proxy.relay.call import Call  # noqa: E402
from proxy.selectors import Caller  # noqa: E402


class _Request:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


def _call(number: int, prompt_words: int) -> Call:
    body = {"model": "bench-model", "max_tokens": 4000, "stream": True,
            "messages": [{"role": "user", "content": " ".join(["word"] * prompt_words)}]}
    chat = parse_chat_request(orjson.dumps(body))
    price = ModelPrice(model="bench-model", input_usd_per_mtok=Decimal("1"),
                       output_usd_per_mtok=Decimal("2"), max_output_tokens=16_000)
    plan = capped_plan(chat, price)
    assert plan is not None
    caller = Caller(user_id=1, api_key_id=1, key_prefix="sk-bench", wallet_id=1,
                    expires_at=None)
    return Call(request=_Request(f"req-bench-{number}"), caller=caller, chat=chat,
                price=price, plan=plan, admission=Admission(True, None, 0, {}))


def _chunk(text: str) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=20,
                        help="chunks a stream relays between two checkpoints")
    parser.add_argument("--checkpoints", type=int, default=5, help="per stream")
    parser.add_argument("--prompt-words", type=int, default=200)
    args = parser.parse_args()
    clock = time.process_time_ns
    first, later, idle, metering = [], [], [], []
    for number in range(args.streams):
        call = _call(number, args.prompt_words)
        for round_ in range(args.checkpoints):
            chunks = [_chunk(" word") for _ in range(args.chunks)]
            started = clock()
            for chunk in chunks:
                call.meter.meter_chunk(chunk)
            metering.append(clock() - started)
            started = clock()
            resolution = call.checkpoint()
            (first if round_ == 0 else later).append(clock() - started)
            assert resolution is not None
            resolution.line()  # what the spool writes, timed apart below
            started = clock()
            assert call.checkpoint() is None
            idle.append(clock() - started)
    base = statistics.median(metering)
    print(f"{args.streams} streams, {args.checkpoints} checkpoints each, "
          f"{args.chunks} chunks between two, a {args.prompt_words}-word prompt")
    print(f"{'median CPU':<44}{'us':>8}{'/ metering':>12}")
    for label, samples in (
            (f"metering {args.chunks} chunks (the baseline)", metering),
            ("a stream's first checkpoint", first),
            ("a later checkpoint", later),
            ("a checkpoint with nothing new", idle)):
        value = statistics.median(samples)
        print(f"{label:<44}{value / 1000:>8.1f}{value / base:>12.3f}")


if __name__ == "__main__":
    main()
