"""What the client is told says what it can act on; what went wrong inside (a worker's
name, an exception's class, a database id, an upstream's address) is logged with the
request id instead."""

from __future__ import annotations

import logging
import re

import httpx
import openai
import pytest

from accounts.models import ApiKey
from proxy.ground.cache import clear_all_caches
from tests.proxy.upstream import openai_error

MESSAGES = [{"role": "user", "content": "Hello."}]
# What must never reach a client: worker names, exception classes, ids, addresses.
INTERNAL = re.compile(r"local-\d+|Error\b|Exception|key:\d|user:\d|127\.0\.0\.1|localhost|"
                      r"gpt-4o-mini|:\d{4,5}\b")


def _log_of(caplog, request_id: str) -> str:
    return "\n".join(record.getMessage() for record in caplog.records
                     if request_id in record.getMessage())


def test_an_unreachable_worker_is_an_upstream_failure_with_the_detail_in_the_log(
    openai_worker, make_key, client_for, caplog
):
    openai_worker.base_url = "http://127.0.0.1:9/v1"  # nothing listens there
    openai_worker.save()
    clear_all_caches()
    _, secret = make_key()
    with caplog.at_level(logging.INFO), pytest.raises(openai.APIStatusError) as failed:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert failed.value.status_code == 502
    message = failed.value.body["message"]
    assert not INTERNAL.search(message), message
    request_id = failed.value.response.headers["x-request-id"]
    logged = _log_of(caplog, request_id)
    assert openai_worker.name in logged
    assert "UpstreamConnectError" in logged


def test_a_stream_whose_upstream_dies_says_so_without_naming_the_worker(
    openai_worker, upstream, make_key, router
):
    upstream.configure(error_after_chunks=3)
    _, secret = make_key()
    with httpx.stream("POST", f"{router.base_url}/chat/completions", timeout=20,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "test-model", "messages": MESSAGES,
                            "stream": True}) as response:
        errors = [line for line in response.iter_lines() if '"error"' in line]
    assert errors
    assert not INTERNAL.search(errors[-1]), errors[-1]
    assert "The upstream failed mid-stream." in errors[-1]


def test_a_rate_limit_names_the_key_by_its_prefix_not_its_id(
    openai_worker, make_key, client_for
):
    _, secret = make_key()
    ApiKey.objects.filter(prefix=secret[:18]).update(rpm=1)
    clear_all_caches()
    client = client_for(secret)
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=5)
    message = limited.value.body["message"]
    assert f"the API key {secret[:18]}..." in message
    assert "requests per minute" in message
    assert not INTERNAL.search(message), message


def test_a_client_error_from_the_upstream_names_the_model_as_the_client_does(
    openai_worker, upstream, make_key, client_for
):
    upstream.configure(status=400, error_body=openai_error(
        400, "This model's maximum context length is 128000 tokens (gpt-4o-mini).",
        code="context_length_exceeded", param="messages"))
    _, secret = make_key()
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(secret).chat.completions.create(model="test-model", messages=MESSAGES)
    assert refused.value.code == "context_length_exceeded"
    assert "(test-model)" in refused.value.message
    assert "gpt-4o-mini" not in refused.value.message
