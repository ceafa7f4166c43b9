"""The official Node SDKs, OpenAI's and Anthropic's (``tests/node``'s lock file, installed
into ``.venv/node`` by ``make install-dev`` with npm), against a live router: what they
parse out of a whole answer and a stream, and the error classes they map our errors to.
Skipped without Node.js and npm (CI has both)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from billing.models import UsageRecord, Wallet
from tests.live_router import wait_for_charges
from tests.openai_schema import validate
from tests.proxy.upstream import DEFAULT_REPLY, plan_completion

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
# Where `make install-dev` installs the SDKs: in the virtualenv running the tests.
NODE_SDKS = Path(sys.prefix) / "node"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_SDKS / "node_modules" / "openai").is_dir(),
    reason="no Node.js, or its SDKs not installed: `make install-dev` runs `npm ci` into "
           ".venv/node when npm is there (CI has it, so these tests run there)")


def node_calls(script: str, base_url: str, make_key) -> tuple[int, dict[str, Any]]:
    """Run ``script`` with a funded key and an empty one: (the funded user, its output)."""
    user_id, secret = make_key()
    _, poor = make_key(credit_micros=0)
    done = subprocess.run(
        ["node", str(NODE_DIR / script)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "NODE_SDKS": str(NODE_SDKS), "BASE_URL": base_url,
             "API_KEY": secret, "POOR_KEY": poor, "MODEL": "test-model"}, check=False)
    assert done.returncode == 0, done.stderr
    return user_id, json.loads(done.stdout)


def charged(user_id: int, count: int) -> dict[str, UsageRecord]:
    """The user's usage records by request id, once written; the wallet agrees with them."""
    wait_for_charges()
    records = {r.request_id: r for r in UsageRecord.objects.filter(user_id=user_id)}
    assert len(records) == count
    wallet = Wallet.objects.get(user_id=user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (
        1_000_000 - sum(r.cost_micros for r in records.values()), 0)
    return records


def test_the_node_sdk_reads_answers_streams_and_errors_as_openais(
        openai_worker, upstream, make_key, router) -> None:
    user_id, out = node_calls("openai_calls.mjs", router.base_url, make_key)

    expected = plan_completion({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [
        {"role": "user", "content": "Hello from Node"}]}, DEFAULT_REPLY)
    answer = out["answer"]
    assert answer["content"] == expected.text
    assert answer["model"] == "test-model"
    assert answer["finish_reason"] in ("stop", "length")
    validate(answer["usage"], "CompletionUsage")
    assert answer["usage"]["completion_tokens"] == expected.completion_tokens

    stream = out["stream"]
    assert stream["text"] == expected.text
    assert stream["usage_chunks"] == 1
    assert stream["usage"]["completion_tokens"] == expected.completion_tokens
    assert stream["objects"] == ["chat.completion.chunk"]
    assert stream["ids"] == 1
    assert stream["finish_reasons"] == [answer["finish_reason"]]
    assert "test-model" in out["models"]

    assert out["unauthorized"] == {"class": "AuthenticationError", "status": 401,
                                   "code": "invalid_api_key",
                                   "type": "invalid_request_error", "param": None}
    assert out["not_found"]["class"] == "NotFoundError"
    assert out["not_found"]["code"] == "model_not_found"
    assert out["bad_request"]["class"] == "BadRequestError"
    assert out["bad_request"]["param"] == "temperature"
    for refused in (out["no_funds"], out["no_funds_stream"]):
        assert refused["status"] == 402
        assert refused["code"] == "insufficient_quota"

    # What the SDK was shown is what was charged: the answer's header and usage, the
    # stream's usage chunk (its cost in micro-USD, as the router adds it).
    records = charged(user_id, 2)
    assert records[answer["request_id"]].cost_micros == int(answer["cost_header"])
    assert round(answer["usage"]["cost"] * 1e6) == int(answer["cost_header"])
    streamed = next(r for rid, r in records.items() if rid != answer["request_id"])
    assert streamed.cost_micros == round(stream["usage"]["cost"] * 1e6)


def test_the_anthropic_node_sdk_reads_messages_and_their_streams(
        openai_worker, upstream, make_key, router) -> None:
    """Through an OpenAI worker: the Messages dialect translated both ways."""
    user_id, out = node_calls("anthropic_calls.mjs", router.url, make_key)

    message, stream = out["message"], out["stream"]
    assert (message["type"], message["role"], message["model"], message["stop_reason"]) == (
        "message", "assistant", "test-model", "end_turn")
    assert message["text"] == DEFAULT_REPLY
    assert stream["text"] == DEFAULT_REPLY
    assert stream["stop_reason"] == "end_turn"
    assert (stream["first"], stream["last"]) == ("message_start", "message_stop")
    assert stream["deltas"] >= 1
    assert stream["usage"]["output_tokens"] == message["usage"]["output_tokens"] > 0
    assert out["unauthorized"] == {"class": "AuthenticationError", "status": 401,
                                   "type": "authentication_error"}
    assert out["not_found"]["class"] == "NotFoundError"
    assert out["not_found"]["type"] == "not_found_error"
    assert out["no_funds"] == {"class": "PaymentRequiredError", "status": 402,
                               "type": "billing_error"}

    records = charged(user_id, 2)
    assert {r.endpoint for r in records.values()} == {"messages"}
    assert records[message["request_id"]].cost_micros == int(message["cost_header"])
