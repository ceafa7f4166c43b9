"""One JSON line per request, with every field and no secret."""

from __future__ import annotations

import logging

import httpx
import orjson

from proxy.ground.access_log import FIELDS
from tests.log_records import every_log_record

MESSAGES = [{"role": "user", "content": "a very private sentence"}]


def _complete_once_each_way(router, secret: str) -> None:
    for stream in (False, True):
        with httpx.stream("POST", f"{router.base_url}/chat/completions", timeout=20,
                          headers={"Authorization": f"Bearer {secret}"},
                          json={"model": "test-model", "messages": MESSAGES,
                                "stream": stream}) as response:
            response.read()


def _lines(caplog) -> list[dict]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "proxy.access"]


def test_each_request_logs_one_json_line_with_every_field_and_no_secret(
    openai_worker, make_key, router, caplog
):
    user_id, secret = make_key()
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        _complete_once_each_way(router, secret)
        httpx.post(f"{router.base_url}/chat/completions", json={"model": "x"},
                   headers={"Authorization": f"Bearer {secret}"})
        router.drain()

    lines = _lines(caplog)
    assert len(lines) == 3
    answered = [line for line in lines if line["status"] == 200]
    assert len(answered) == 2
    for line in answered:
        assert set(line) == set(FIELDS)
        assert line["user_id"] == user_id
        assert line["key_prefix"] == secret[:18]
        assert (line["model"], line["worker"], line["outcome"]) == (
            "test-model", openai_worker.name, "ok")
        assert line["prompt_tokens"] > 0
        assert line["completion_tokens"] > 0
        assert line["cost_micros"] == line["prompt_tokens"] + 2 * line["completion_tokens"]
        assert line["latency_ms"] is not None
        assert line["ttft_ms"] is not None
        assert line["request_id"].startswith("req_")
    refused = [line for line in lines if line["status"] == 400]
    assert refused[0]["key_prefix"] == secret[:18]
    text = caplog.text
    assert secret not in text
    assert secret[18:] not in text
    assert "private sentence" not in text
    assert "upstream-secret" not in text


def test_staff_can_turn_on_content_logging_for_completions(
    openai_worker, upstream, make_key, router, caplog, settings
):
    settings.ROUTER_LOG_CONTENT = True
    _, secret = make_key()
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        _complete_once_each_way(router, secret)
        router.drain()

    lines = _lines(caplog)
    assert len(lines) == 2
    for line in lines:
        assert set(line) == set(FIELDS) | {"messages", "reply"}
        assert line["messages"] == MESSAGES
        assert line["reply"] == upstream.behaviour.reply
    assert secret not in caplog.text


# The HTTP client's own lines ("HTTP Request: POST ..."), not the router's.
CLIENT_LOGGERS = ("httpx", "httpcore")


def test_a_refused_request_writes_one_log_line_only_its_access_line(
    openai_worker, make_key, router
):
    _, broke = make_key(credit_micros=0)
    body = {"model": "test-model", "messages": MESSAGES}
    statuses = []
    for secret in ("sk-br-not-a-key", broke):
        # What a deployment shows: INFO and up (LOG_LEVEL's default) where the settings set
        # no level, and uvicorn's access log on, as under `make run`.
        with every_log_record({"": logging.INFO, "uvicorn.access": logging.INFO}) as lines:
            response = httpx.post(f"{router.base_url}/chat/completions", json=body, timeout=20,
                                  headers={"Authorization": f"Bearer {secret}"})
            router.drain()
        statuses.append(response.status_code)
        router_lines = [line for line in lines if not line.logger.startswith(CLIENT_LOGGERS)]
        assert [line.logger for line in router_lines] == ["proxy.access"], router_lines
        assert orjson.loads(router_lines[0].text.split(" ", 2)[2])["status"] == (
            response.status_code)
    assert statuses == [401, 402]
