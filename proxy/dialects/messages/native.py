"""The Messages dialect spoken natively to Anthropic workers (``NativeCodec``).

The client's body goes up as it came (thinking blocks, cache_control and every field this
router does not know intact), with only the model, the router's cap and the stream flag
set. The answer is read back into the internal form by the Anthropic adapter's own
translation (``proxy.upstream.providers.anthropic``), so metering, usage checks and the
charge are the ones every dialect gets; thinking is read as ``reasoning_content`` so that
the meter counts it (Anthropic's ``output_tokens`` include it). The upstream's own message,
or each stream event, rides along under ``NATIVE`` for the renderer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.dialects.base import NATIVE
from proxy.upstream.providers.anthropic import ANTHROPIC_VERSION
from proxy.upstream.providers.anthropic.response import chat_completion, stream_error
from proxy.upstream.providers.anthropic.stream import ChunkTranslator
from proxy.upstream.providers.base import UpstreamError

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget

Chunk = dict[str, Any]


def thinking_of(message: dict[str, Any]) -> str:
    return "".join(str(block.get("thinking") or "") for block in message.get("content") or ()
                   if isinstance(block, dict) and block.get("type") == "thinking")


class NativeEvents:
    """An Anthropic stream's events as internal chunks. Each chunk carries, under
    ``NATIVE``, the one event it came from and the finish reason it was made with (so the
    renderer can tell a chunk the meter cut). An event that makes no chunk of its own
    (``content_block_stop``, ``ping``, a signature) comes as a chunk with no choices, which
    the path hands to the renderer as it is (``StreamRender.aside``): no event is lost, and
    none waits for the next one."""

    def __init__(self, *, model: str, worker: str) -> None:
        # include_usage: the usage of message_stop comes as its own chunk, for the charge.
        self._inner = ChunkTranslator(model=model, include_usage=True)
        self._worker = worker

    @property
    def done(self) -> bool:
        return self._inner.done

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        if event.get("type") == "error":
            raise stream_error(event, worker=self._worker,
                               before_output=not self._inner.started)
        chunks = self._inner.feed(event)
        delta = event.get("delta")
        if (event.get("type") == "content_block_delta" and isinstance(delta, dict)
                and delta.get("type") == "thinking_delta" and delta.get("thinking")):
            chunks = [self._inner._chunk({"reasoning_content": delta["thinking"]})]
        carried = False
        for chunk in chunks:
            if chunk.get("choices") and not carried:
                chunk[NATIVE] = {"events": [event],
                                 "finish": chunk["choices"][0].get("finish_reason")}
                carried = True
        if not carried and event.get("type") not in ("message_stop", "message_delta"):
            # message_delta and message_stop are the renderer's to write, once charged.
            chunks.insert(0, {"id": self._inner.id, "object": "chat.completion.chunk",
                              "choices": [], NATIVE: {"events": [event], "finish": None}})
        return chunks


class MessagesCodec:
    path = "/messages"

    def body(self, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        body = dict(call.chat.native or {})
        body["model"] = target.upstream_model
        # The router's cap, the one its hold was computed for.
        body["max_tokens"] = call.plan.max_tokens
        if call.chat.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    def headers(self, call: Call) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        headers.update(call.chat.client_headers or {})
        return headers

    def answer(self, raw: Any, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        if not isinstance(raw, dict) or not isinstance(raw.get("content"), list):
            raise UpstreamError(f"{target.worker_name} sent no message", retryable=True,
                                status=200)
        answer = chat_completion(raw, model=target.upstream_model)
        thinking = thinking_of(raw)
        if thinking and answer["choices"]:
            answer["choices"][0]["message"]["reasoning_content"] = thinking
        answer[NATIVE] = raw
        return answer

    def translator(self, call: Call, target: UpstreamTarget) -> NativeEvents:
        return NativeEvents(model=target.upstream_model, worker=target.worker_name)


CODEC = MessagesCodec()
