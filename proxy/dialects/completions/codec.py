"""Legacy completions spoken natively to an OpenAI-compatible worker that lists them.

The client's body goes upstream with the router's model, cap and stream usage; the
``text_completion`` answer (or each chunk) is read into the internal chat form, each choice's
``text`` as its message's (or delta's) ``content``, so the path meters and checks it as it
does chat; the upstream's own form rides along under ``NATIVE`` for rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxy.dialects.base import NATIVE
from proxy.upstream.providers.base import UpstreamError

if TYPE_CHECKING:
    from proxy.relay.call import Call
    from proxy.upstream.providers.base import UpstreamTarget


def _choices(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The raw choices as internal ones: ``key`` is "message" (an answer) or "delta"."""
    choices = []
    for position, choice in enumerate(raw.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")
        fields: dict[str, Any] = {"content": text if isinstance(text, str) else ""}
        if key == "message":
            fields["role"] = "assistant"
        choices.append({"index": choice.get("index", position), key: fields,
                        "finish_reason": choice.get("finish_reason")})
    return choices


class LegacyTranslator:
    """``text_completion`` chunks into internal chunks; OpenAI ends the stream with
    ``[DONE]``, which the native stream reads itself."""

    def __init__(self, worker: str) -> None:
        self.done = False
        self._worker = worker

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(event.get("error"), dict):
            raise UpstreamError(f"{self._worker}: {event['error'].get('message')}",
                                retryable=False, body=event)
        chunk: dict[str, Any] = {"id": event.get("id"), "object": "chat.completion.chunk",
                                 "created": event.get("created"), "model": event.get("model"),
                                 "choices": _choices(event, "delta"), NATIVE: event}
        if event.get("usage") is not None:
            chunk["usage"] = event["usage"]
        return [chunk]


class CompletionsCodec:
    path = "/completions"

    def body(self, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        # ``echo`` is the router's to do (so the echoed prompt is never metered as output).
        body = {k: v for k, v in (call.chat.native or {}).items() if k != "echo"}
        body["model"] = target.upstream_model
        # The legacy API has one cap field: the plan's cap, whatever the worker's chat field.
        body["max_tokens"] = call.plan.max_tokens
        if call.chat.stream:
            # Forced so the charge can come from the upstream's own count.
            body["stream_options"] = {**(body.get("stream_options") or {}),
                                      "include_usage": True}
        return body

    def headers(self, call: Call) -> Mapping[str, str]:
        return {}

    def answer(self, raw: Any, call: Call, target: UpstreamTarget) -> dict[str, Any]:
        if not isinstance(raw, dict) or not isinstance(raw.get("choices"), list):
            raise UpstreamError(f"{target.worker_name} sent no text completion",
                                retryable=True, status=200)
        return {"id": raw.get("id"), "object": "chat.completion", "created": raw.get("created"),
                "model": raw.get("model"), "choices": _choices(raw, "message"),
                "usage": raw.get("usage"), NATIVE: raw}

    def translator(self, call: Call, target: UpstreamTarget) -> LegacyTranslator:
        return LegacyTranslator(target.worker_name)


CODEC = CompletionsCodec()
