"""The Responses dialect spoken natively to OpenAI-compatible workers that list it
(``NativeCodec``).

The client's body goes up as it came (tools, ``text.format``, ``reasoning``, ``include``
and every field this router does not know intact), with the router's model, cap and
stream flag, and ``store: false``: stored responses are the router's to keep (for their
owner, with their retention), never the upstream's. So ``previous_response_id`` is never
sent: the router resolves it, and its stored context goes up as explicit ``input`` items
before the client's own.

The answer is read back into the internal ``chat.completion`` (output text, function calls,
reasoning text, the finish reason, the usage in chat's names) so that metering, usage checks
and the charge are the ones every dialect gets; the upstream's ``response`` rides along
under ``NATIVE`` for the renderer. A stream's events become internal chunks, from which
the router writes its own (equivalent) event sequence.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from proxy.dialects.base import NATIVE
from proxy.dialects.responses.items import message_items
from proxy.upstream.providers.base import UpstreamError

if TYPE_CHECKING:
    from proxy.dialects.responses.render import ResponsesDialect
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget

Chunk = dict[str, Any]
# Reasoning as Responses carries it: summaries (OpenAI) and raw text (open models).
REASONING_PARTS = ("summary", "content")


def _texts(parts: object, kinds: tuple[str, ...]) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(str(part.get("text") or "") for part in parts
                   if isinstance(part, dict) and part.get("type") in kinds)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def chat_usage(usage: object) -> dict[str, Any] | None:
    """A Responses ``usage`` in chat's names (what the usage check reads); anything that
    is not one is passed on as it is, for the check to refuse."""
    if not isinstance(usage, dict):
        return None
    internal: dict[str, Any] = {"prompt_tokens": usage.get("input_tokens"),
                                "completion_tokens": usage.get("output_tokens")}
    if _int(usage.get("input_tokens")) and _int(usage.get("output_tokens")):
        internal["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    details = usage.get("input_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        internal["prompt_tokens_details"] = {"cached_tokens": details["cached_tokens"]}
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and _int(details.get("reasoning_tokens")):
        internal["completion_tokens_details"] = {
            "reasoning_tokens": details["reasoning_tokens"]}
    return internal


def finish_reason(response: dict[str, Any], *, calls: bool) -> str:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


def chat_completion(raw: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An upstream's whole ``response`` as an internal ``chat.completion``."""
    reasoning, text, refusal = [], [], []
    calls: list[dict[str, Any]] = []
    for item in raw.get("output") or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "reasoning":
            reasoning += [_texts(item.get(name), ("summary_text", "reasoning_text"))
                          for name in REASONING_PARTS]
        elif kind == "message":
            text.append(_texts(item.get("content"), ("output_text",)))
            refusal += [str(part.get("refusal") or "") for part in item.get("content") or ()
                        if isinstance(part, dict) and part.get("type") == "refusal"]
        elif kind == "function_call":
            calls.append({"id": str(item.get("call_id") or item.get("id") or ""),
                          "type": "function",
                          "function": {"name": str(item.get("name") or ""),
                                       "arguments": str(item.get("arguments") or "")}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if "".join(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if "".join(refusal):
        message["refusal"] = "".join(refusal)
    if calls:
        message["tool_calls"] = calls
    answer: dict[str, Any] = {
        "id": f"chatcmpl-{raw.get('id') or uuid.uuid4().hex}", "object": "chat.completion",
        "created": raw.get("created_at") if _int(raw.get("created_at")) else 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(raw, calls=bool(calls))}]}
    usage = chat_usage(raw.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


def stream_error(event: dict[str, Any], *, worker: str, before_output: bool) -> UpstreamError:
    """A ``response.failed`` or ``error`` event. Before any output went out another worker
    may still take the request; after, nothing can."""
    error = event.get("error")
    response = event.get("response")
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        error = response["error"]
    if not isinstance(error, dict):
        error = event  # the ``error`` event carries its code and message itself
    code, message = error.get("code"), error.get("message")
    return UpstreamError(f"{worker} sent {event.get('type')} ({code or 'unknown'}): "
                         f"{message or ''}", retryable=before_output)


class ResponsesEvents:
    """A Responses stream's events as internal chunks (``EventTranslator``).

    Text, refusals and reasoning come from their delta events; a function call opens with
    its ``output_item.added`` and grows with its argument deltas. The ``.done`` events (and
    the final response) are read for anything the deltas left out, as servers that send
    whole items without deltas do. ``response.completed`` or ``response.incomplete`` ends
    it with the finish reason and the usage; ``response.failed`` and ``error`` raise.
    """

    def __init__(self, *, worker: str) -> None:
        self.done = False
        self._worker = worker
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._started = False  # a chunk with output was made
        self._sent: dict[tuple[Any, ...], str] = {}  # text sent, by where it belongs
        self._calls: dict[Any, int] = {}  # a function call's tool index, by output index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {"id": self._id, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        kind = event.get("type")
        if kind in ("response.failed", "error"):
            raise stream_error(event, worker=self._worker, before_output=not self._started)
        where = event.get("output_index")
        chunks: list[Chunk] = []
        if kind == "response.output_text.delta":
            chunks = self._text("content", (where, event.get("content_index")),
                                event.get("delta"), whole=False)
        elif kind == "response.refusal.delta":
            chunks = self._text("refusal", (where, event.get("content_index")),
                                event.get("delta"), whole=False)
        elif kind == "response.reasoning_summary_text.delta":
            chunks = self._text("reasoning_content",
                                (where, "summary", event.get("summary_index")),
                                event.get("delta"), whole=False)
        elif kind == "response.reasoning_text.delta":
            chunks = self._text("reasoning_content",
                                (where, "content", event.get("content_index")),
                                event.get("delta"), whole=False)
        elif kind == "response.function_call_arguments.delta":
            chunks = self._arguments(where, event.get("delta"), whole=False)
        elif kind == "response.function_call_arguments.done":
            chunks = self._arguments(where, event.get("arguments"), whole=True)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            chunks = self._item(where, event.get("item"))
        elif kind in ("response.completed", "response.incomplete"):
            chunks = self._end(event.get("response"))
        if chunks:
            self._started = True
        return chunks

    def _text(self, field: str, key: tuple[Any, ...], text: object, *,
              whole: bool) -> list[Chunk]:
        """A delta of ``field`` at ``key``; ``whole``: the whole text there, of which only
        what was not sent yet goes out."""
        if not isinstance(text, str) or not text:
            return []
        key = (field, *key)
        sent = self._sent.get(key, "")
        if whole:
            if not text.startswith(sent) or len(text) == len(sent):
                return []
            text = text[len(sent):]
        self._sent[key] = sent + text
        return [self._chunk({field: text})]

    def _call(self, where: object, item: dict[str, Any] | None) -> tuple[int, list[Chunk]]:
        """The tool index of the call at ``where``, announcing it when it is new."""
        if where in self._calls:
            return self._calls[where], []
        index = self._calls[where] = len(self._calls)
        item = item or {}
        call_id = str(item.get("call_id") or item.get("id") or f"call_{uuid.uuid4().hex}")
        return index, [self._chunk({"tool_calls": [
            {"index": index, "id": call_id, "type": "function",
             "function": {"name": str(item.get("name") or ""), "arguments": ""}}]})]

    def _arguments(self, where: object, text: object, *, whole: bool,
                   item: dict[str, Any] | None = None) -> list[Chunk]:
        index, chunks = self._call(where, item)
        if not isinstance(text, str) or not text:
            return chunks
        key = ("arguments", where)
        sent = self._sent.get(key, "")
        if whole:
            if not text.startswith(sent) or len(text) == len(sent):
                return chunks
            text = text[len(sent):]
        self._sent[key] = sent + text
        return [*chunks, self._chunk({"tool_calls": [
            {"index": index, "function": {"arguments": text}}]})]

    def _item(self, where: object, item: object) -> list[Chunk]:
        """An item announced or finished: a new function call, or what its deltas left
        out."""
        if not isinstance(item, dict):
            return []
        kind = item.get("type")
        if kind == "function_call":
            return self._arguments(where, item.get("arguments"), whole=True, item=item)
        chunks: list[Chunk] = []
        if kind == "message":
            for i, part in enumerate(item.get("content") or ()):
                if isinstance(part, dict) and part.get("type") == "output_text":
                    chunks += self._text("content", (where, i), part.get("text"), whole=True)
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    chunks += self._text("refusal", (where, i), part.get("refusal"),
                                         whole=True)
        elif kind == "reasoning":
            for name in REASONING_PARTS:
                for i, part in enumerate(item.get(name) or ()):
                    if isinstance(part, dict):
                        chunks += self._text("reasoning_content", (where, name, i),
                                             part.get("text"), whole=True)
        return chunks

    def _end(self, response: object) -> list[Chunk]:
        self.done = True
        response = response if isinstance(response, dict) else {}
        chunks: list[Chunk] = []
        for where, item in enumerate(response.get("output") or ()):
            chunks += self._item(where, item)
        finish = finish_reason(response, calls=bool(self._calls))
        chunks.append(self._chunk({}, finish))
        usage = chat_usage(response.get("usage"))
        if usage is not None:
            # As chat's include_usage chunk: no choices, the usage for the charge.
            chunks.append({"id": self._id, "object": "chat.completion.chunk", "choices": [],
                           "usage": usage})
        return chunks


class ResponsesCodec:
    path = "/responses"

    def __init__(self, dialect: ResponsesDialect) -> None:
        self._dialect = dialect

    def body(self, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        body = dict(call.chat.native or {})
        body["model"] = target.upstream_model
        # The router's cap, the one its hold was computed for.
        body["max_output_tokens"] = call.plan.max_tokens
        # The router keeps stored responses; the upstream keeps nothing.
        body["store"] = False
        body.pop("previous_response_id", None)
        previous = self._dialect.previous
        if previous:
            own = body.get("input")
            own = [{"type": "message", "role": "user", "content": own}] if isinstance(
                own, str) else list(own or ())
            body["input"] = [*message_items(previous), *own]
        if call.chat.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body

    def headers(self, call: Call) -> dict[str, str]:
        return {}

    def answer(self, raw: Any, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        if not isinstance(raw, dict) or not isinstance(raw.get("output"), list):
            raise UpstreamError(f"{target.worker_name} sent no response", retryable=True,
                                status=200)
        if raw.get("status") == "failed":
            raise stream_error({"type": "response.failed", "response": raw},
                               worker=target.worker_name, before_output=True)
        answer = chat_completion(raw, model=target.upstream_model)
        answer[NATIVE] = raw
        return answer

    def translator(self, call: Call, target: UpstreamTarget) -> ResponsesEvents:
        return ResponsesEvents(worker=target.worker_name)
