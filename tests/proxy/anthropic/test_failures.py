"""The Anthropic adapter end to end, failures: refusals, overloads, bad keys, streams that
die, each charged only for what was produced, with failover where another worker can help."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from billing.models import Hold, UsageRecord
from proxy.ground.cache import clear_all_caches
from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from proxy.upstream.providers import provider_for
from proxy.upstream.providers.anthropic import AnthropicProvider
from proxy.upstream.providers.base import UpstreamTarget
from tests.openai_schema import validate
from tests.proxy.anthropic.helpers import (
    anthropic_worker_for,
    assert_nothing_charged,
    cost_of,
    wallet_of,
)
from tests.proxy.anthropic.samples import (
    MESSAGES,
)
from tests.proxy.anthropic.upstream import AnthropicServer


def test_an_anthropic_400_reaches_the_client_as_an_openai_400_and_costs_nothing(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    anthropic_upstream.configure(status=400, error_message="messages.0.content: bad image")
    user_id, secret = make_key()
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as bad:
            client_for(secret).chat.completions.create(model="claude-test",
                                                       messages=MESSAGES, stream=stream)
        validate(bad.value.response.json(), "ErrorResponse")
        assert bad.value.body["message"] == "messages.0.content: bad image"
        assert bad.value.type == "invalid_request_error"
    router.drain()
    assert_nothing_charged(user_id)
    assert set(UsageRecord.objects.values_list("status", "cost_micros")) == {
        ("upstream_error", 0)}


def test_a_request_the_adapter_cannot_translate_is_a_400_that_never_reaches_anthropic(
    anthropic_worker, anthropic_upstream, make_key, client_for
):
    user_id, secret = make_key()
    with pytest.raises(openai.BadRequestError) as bad:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES,
                                                   n=2)
    assert bad.value.param == "n"
    assert anthropic_upstream.requests == []
    assert_nothing_charged(user_id)


def test_an_overloaded_anthropic_worker_alone_ends_as_a_502_and_costs_nothing(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    anthropic_upstream.configure(status=529)
    user_id, secret = make_key()
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as failed:
            client_for(secret).chat.completions.create(model="claude-test",
                                                       messages=MESSAGES, stream=stream)
        assert failed.value.status_code == 502
        validate(failed.value.response.json(), "ErrorResponse")
    router.drain()
    assert_nothing_charged(user_id)


def test_an_overloaded_anthropic_worker_fails_over_to_the_next_one(
    anthropic_upstream, claude_price, make_key, client_for, router
):
    anthropic_upstream.configure(status=529)
    anthropic_worker_for(anthropic_upstream, priority=10)
    with AnthropicServer(reply="From the second worker.") as second:
        backup = anthropic_worker_for(second, priority=0)
        user_id, secret = make_key()
        completion = client_for(secret).chat.completions.create(
            model="claude-test", messages=MESSAGES, max_tokens=50)
        assert completion.choices[0].message.content == "From the second worker."
        assert len(anthropic_upstream.requests) == 1
        answer = second.answers[-1]
    router.drain()
    record = UsageRecord.objects.get()
    assert (record.worker, record.status) == (backup.name, "ok")
    assert record.cost_micros == cost_of(answer.prompt_tokens, answer.usage["output_tokens"])
    assert wallet_of(user_id).posted_micros == 1_000_000 - record.cost_micros


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_workers_404_fails_over_and_alone_is_a_502_whatever_its_kind(
    anthropic_upstream, claude_price, make_key, client_for, router, upstream, kind
):
    """A 404 from a worker means its base URL or model name is wrong, not the client's
    model (which the router checked): another worker is tried, and with none left the
    client gets a 502, never a 404 that says its model does not exist."""
    from proxy.models import Worker, WorkerModel

    if kind == "anthropic":
        anthropic_upstream.configure(status=404, error_type="not_found_error",
                                     error_message="model: claude-nope")
        broken = anthropic_worker_for(anthropic_upstream, priority=10)
    else:
        upstream.configure(status=404)
        broken = Worker.objects.create(name="broken-openai", kind="openai", priority=10,
                                       base_url=upstream.base_url)
        WorkerModel.objects.create(worker=broken, model="claude-test")
    _, secret = make_key()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES)
    assert failed.value.status_code == 502
    with AnthropicServer(reply="From the second worker.") as second:
        anthropic_worker_for(second, priority=0)
        clear_all_caches()
        completion = client_for(secret).chat.completions.create(
            model="claude-test", messages=MESSAGES, max_tokens=50)
        assert completion.choices[0].message.content == "From the second worker."
    router.drain()
    # Both requests went to the broken worker first; the second failed over.
    tried = anthropic_upstream if kind == "anthropic" else upstream
    assert len(tried.requests) == 2
    assert sorted(UsageRecord.objects.values_list("status", flat=True)) == [
        "ok", "upstream_error"]
    assert UsageRecord.objects.get(status="upstream_error").cost_micros == 0


def test_a_worker_with_a_bad_anthropic_key_is_a_502_not_the_clients_401(
    anthropic_upstream, claude_price, make_key, client_for, router
):
    anthropic_worker_for(anthropic_upstream, key="sk-ant-revoked")
    user_id, secret = make_key()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES)
    assert failed.value.status_code == 502
    assert anthropic_upstream.requests[-1].headers["x-api-key"] == "sk-ant-revoked"
    router.drain()
    assert_nothing_charged(user_id)


def _sse_events(router, secret: str) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{router.base_url}/chat/completions",
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "claude-test", "messages": MESSAGES, "stream": True,
                            "max_tokens": 100}) as response:
        assert response.status_code == 200
        return [orjson.loads(line[6:]) for line in response.iter_lines()
                if line.startswith("data: {")]


def test_anthropic_dying_mid_stream_sends_an_error_event_and_charges_what_was_produced(
    anthropic_worker, anthropic_upstream, make_key, router
):
    # message_start, content_block_start, ping and three text deltas, then the connection
    # drops.
    anthropic_upstream.configure(die_after_events=6)
    user_id, secret = make_key()
    events = _sse_events(router, secret)
    router.drain()
    assert "error" in events[-1]
    validate(events[-1], "ErrorResponse")
    produced = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert produced == "".join(anthropic_upstream.answers[-1].text_pieces[:3])
    record = UsageRecord.objects.get()
    assert (record.source, record.status) == ("estimated", "upstream_error")
    assert record.completion_tokens == count_text_tokens(produced) == 3
    assert record.prompt_tokens == exact_prompt_tokens(MESSAGES)
    assert record.cost_micros == cost_of(record.prompt_tokens, 3)
    wallet = wallet_of(user_id)
    assert (wallet.posted_micros, wallet.pending_micros) == (1_000_000 - record.cost_micros,
                                                             0)
    assert not Hold.objects.filter(status="pending").exists()


def test_an_error_event_mid_stream_is_passed_on_and_charges_what_was_produced(
    anthropic_worker, anthropic_upstream, make_key, router
):
    anthropic_upstream.configure(error_after_events=5)  # after two text deltas
    user_id, secret = make_key()
    events = _sse_events(router, secret)
    router.drain()
    validate(events[-1], "ErrorResponse")
    # What failed, and where, is in the router's log; the client learns that it did.
    assert events[-1]["error"]["message"] == "The upstream failed mid-stream."
    record = UsageRecord.objects.get()
    assert (record.status, record.source, record.completion_tokens) == (
        "upstream_error", "estimated", 2)
    assert wallet_of(user_id).pending_micros == 0


def test_an_overload_event_before_the_message_starts_fails_over_like_a_529(
    anthropic_upstream, claude_price, make_key, client_for, router
):
    anthropic_upstream.configure(error_after_events=0)
    anthropic_worker_for(anthropic_upstream, priority=10)
    with AnthropicServer(reply="Second.") as second:
        anthropic_worker_for(second)
        _, secret = make_key()
        chunks = list(client_for(secret).chat.completions.create(
            model="claude-test", messages=MESSAGES, stream=True, max_tokens=20))
    router.drain()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Second."
    assert UsageRecord.objects.get().status == "ok"


def test_the_provider_is_registered_for_the_anthropic_kind():
    target = UpstreamTarget(worker_id=1, worker_name="w", kind="anthropic",
                            base_url="https://api.anthropic.com/v1")
    provider = provider_for(target)
    assert isinstance(provider, AnthropicProvider)
    assert provider._url() == "https://api.anthropic.com/v1/messages"


def test_an_anthropic_worker_slower_than_its_first_byte_timeout_fails_fast_and_free(
    anthropic_worker, anthropic_upstream, make_key, client_for, router
):
    import time

    anthropic_worker.first_byte_timeout_s = 0.3
    anthropic_worker.save()
    anthropic_upstream.configure(first_byte_delay=3)
    user_id, secret = make_key()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="claude-test", messages=MESSAGES)
    assert failed.value.status_code == 502
    assert time.monotonic() - started < 2
    router.drain()
    assert_nothing_charged(user_id)


