from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.openai_schema import validate

PROMPT = "Say something deterministic."


def validate_chunk(chunk: dict[str, Any]) -> None:
    """A ``text_completion`` chunk against OpenAI's document, which gives answers and chunks
    one schema: it requires a ``finish_reason`` that OpenAI's own streams send as null
    until a choice ends. That null is checked here; the rest by the schema."""
    choices = []
    for choice in chunk["choices"]:
        assert choice["finish_reason"] in (None, "stop", "length", "content_filter")
        choices.append({**choice, "finish_reason": choice["finish_reason"] or "stop"})
    validate({**chunk, "choices": choices}, "CreateCompletionResponse")


def post(router, secret: str, body: dict[str, Any], timeout: float = 20) -> httpx.Response:
    return httpx.post(f"{router.base_url}/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {secret}"})


def stream_events(router, secret: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``data:`` event of a stream, parsed ([DONE] as None)."""
    with httpx.stream("POST", f"{router.base_url}/completions", json=body, timeout=20,
                      headers={"Authorization": f"Bearer {secret}"}) as response:
        assert response.status_code == 200, response.read()
        return [None if line == "data: [DONE]" else orjson.loads(line[6:])
                for line in response.iter_lines() if line.startswith("data: ")]
