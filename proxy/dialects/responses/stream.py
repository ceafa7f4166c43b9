"""A Responses stream: OpenAI's event sequence, from the path's internal chunks.

``response.created`` and ``response.in_progress`` open it; each output item (reasoning, the
message, each function call) is announced with ``response.output_item.added``, written with
its deltas and closed with its ``.done`` events before the next one starts (chat streams
write them in that order too); ``response.completed`` (or ``response.incomplete`` when the
output was cut at its cap) ends it with the usage that was charged, after settlement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy.dialects.responses import shape
from proxy.ground.errors import ApiError

if TYPE_CHECKING:
    from proxy.dialects.responses.render import ResponsesDialect
    from proxy.relay.call import Call


class ResponsesStream:
    def __init__(self, dialect: ResponsesDialect, call: Call) -> None:
        self._dialect = dialect
        self._response = dialect.skeleton()
        self._sequence = 0
        self._output: list[dict[str, Any]] = []  # every item announced, in order
        self._open: dict[str, Any] | None = None  # the item being written
        self._text = ""  # the open item's text (a message's or a reasoning item's)
        self._calls: dict[int, dict[str, Any]] = {}  # by the chat tool call's index
        self._finish_reason: object = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def opening(self) -> list[bytes]:
        return [self._event("response.created", response=self._response),
                self._event("response.in_progress", response=self._response)]

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n is always 1 here
            delta = choice.get("delta") or {}
            reasoning = shape.reasoning_text(delta)
            if reasoning:
                events += self._write("reasoning", reasoning)
            for name in ("content", "refusal"):
                if isinstance(delta.get(name), str) and delta[name]:
                    events += self._write("message", delta[name])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def aside(self, chunk: dict[str, Any]) -> list[bytes]:
        return []  # a content-filter note has no Responses event

    async def closing(self, call: Call, usage: dict[str, Any], charged: int,
                      last: dict[str, Any]) -> list[bytes]:
        # An empty answer is still a message, as OpenAI sends it.
        events = [] if self._output else self._open_message()
        events += self._close(shape.item_status(self._finish_reason))
        response = shape.finish(self._response, self._finish_reason, self._output, usage)
        await self._dialect.keep(call, response)
        kind = ("response.completed" if response["status"] == "completed"
                else "response.incomplete")
        events.append(self._event(kind, response=response))
        return events

    def failure(self, error: ApiError) -> list[bytes]:
        response = {**self._response, "status": "failed", "output": self._output,
                    "error": {"code": "server_error", "message": error.message}}
        return [self._event("response.failed", response=response)]

    # --- items ---

    def _announce(self, item: dict[str, Any]) -> list[bytes]:
        self._open, self._text = item, ""
        self._output.append(item)
        return [self._event("response.output_item.added", output_index=len(self._output) - 1,
                            item=item)]

    def _write(self, kind: str, text: str) -> list[bytes]:
        """``text`` added to the open reasoning item or message, opening one if needed."""
        events: list[bytes] = []
        if self._open is None or self._open["type"] != kind:
            events += self._close("completed")
            events += (self._announce(shape.reasoning_item("", "in_progress"))
                       if kind == "reasoning" else self._open_message())
        self._text += text
        if kind == "reasoning":
            events.append(self._event("response.reasoning_text.delta", **self._where(),
                                      delta=text))
        else:
            events.append(self._event("response.output_text.delta", **self._where(),
                                      delta=text, logprobs=[]))
        return events

    def _open_message(self) -> list[bytes]:
        item = shape.message_item("", "in_progress")
        part = item["content"].pop()
        events = self._announce(item)
        events.append(self._event("response.content_part.added", **self._where(), part=part))
        return events

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        index = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        item = self._calls.get(index)
        events: list[bytes] = []
        if item is None:
            events += self._close("completed")
            item = self._calls[index] = shape.call_item(
                str(call.get("id") or shape.new_id("call")), str(function.get("name") or ""),
                "", "in_progress")
            events += self._announce(item)
        elif isinstance(function.get("name"), str):
            item["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=item["id"],
                                      output_index=self._output.index(item), delta=arguments))
        return events

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self._output) - 1,
                "content_index": 0}

    def _close(self, status: str) -> list[bytes]:
        """The ``.done`` events of the open item, which is then finished."""
        item = self._open
        if item is None:
            return []
        events: list[bytes] = []
        if item["type"] == "reasoning":
            events.append(self._event("response.reasoning_text.done", **self._where(),
                                      text=self._text))
            item["content"] = [{"type": "reasoning_text", "text": self._text}]
        elif item["type"] == "message":
            part = {"type": "output_text", "text": self._text, "annotations": [],
                    "logprobs": []}
            events.append(self._event("response.output_text.done", **self._where(),
                                      text=self._text, logprobs=[]))
            events.append(self._event("response.content_part.done", **self._where(),
                                      part=part))
            item["content"] = [part]
        else:
            events.append(self._event("response.function_call_arguments.done",
                                      item_id=item["id"], name=item["name"],
                                      output_index=self._output.index(item),
                                      arguments=item["arguments"]))
        item["status"] = status
        events.append(self._event("response.output_item.done",
                                  output_index=self._output.index(item), item=item))
        self._open, self._text = None, ""
        return events
