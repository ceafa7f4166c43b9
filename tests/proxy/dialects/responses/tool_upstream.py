"""The test upstream, able to call a function: asked with ``tools`` and no tool result yet,
it answers with one tool call (whole, or streamed as OpenAI streams it), its usage the true
count of what it wrote; otherwise it answers as ``UpstreamServer`` does."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from proxy.ground.tokens import count_text_tokens, exact_prompt_tokens
from tests.proxy.upstream import UpstreamServer

CALL_NAME = "get_weather"
CALL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
CALL_ID = "call_weather_1"


def call_usage(body: dict[str, Any]) -> dict[str, Any]:
    prompt = exact_prompt_tokens(body["messages"])
    completion = count_text_tokens(CALL_NAME) + count_text_tokens(CALL_ARGUMENTS)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class ToolUpstream(UpstreamServer):
    name = "tool-calling test upstream"

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        messages = body.get("messages") or []
        if not body.get("tools") or (messages and messages[-1].get("role") == "tool"):
            return await super()._chat_completions(request)
        await self.record(request)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": body["model"]}
        call = {"id": CALL_ID, "type": "function",
                "function": {"name": CALL_NAME, "arguments": CALL_ARGUMENTS}}
        if not body.get("stream"):
            return web.json_response({
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                             "message": {"role": "assistant", "content": None,
                                         "tool_calls": [call]}}],
                "usage": call_usage(body)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        half = len(CALL_ARGUMENTS) // 2
        deltas = [
            {"role": "assistant", "content": None,
             "tool_calls": [{"index": 0, "id": CALL_ID, "type": "function",
                             "function": {"name": CALL_NAME, "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": CALL_ARGUMENTS[:half]}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": CALL_ARGUMENTS[half:]}}]},
        ]
        chunks = [{**base, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                  for delta in deltas]
        chunks.append({**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        chunks.append({**base, "object": "chat.completion.chunk", "choices": [],
                       "usage": call_usage(body)})
        for chunk in chunks:
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
