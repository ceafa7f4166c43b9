"""The output a request delivers, counted by the router and cut where its hold ends.

Each choice may deliver ``allowance`` tokens (the cap sent upstream plus the tolerance for
tokenizer differences; the hold covers exactly that much per choice). Everything a model
writes counts: reasoning text, content, refusals, and tool calls' names and arguments,
in the order they arrive. Output past the allowance is cut where it passes it, and that
choice finishes with ``finish_reason: "length"``; choices beyond the ``n`` that was asked
(and paid) for are dropped. Both mark the answer ``over_cap``.

The meter edits the upstream's chunks and messages in place: they are parsed JSON that
nobody else holds.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from proxy.money.counting import TextCounter

# The text fields of a message or a delta that a model writes, in the order they come:
# reasoning (DeepSeek and vLLM say reasoning_content, OpenRouter reasoning), then the answer.
TEXT_FIELDS = ("reasoning_content", "reasoning", "content", "refusal")


class ChoiceOutput:
    """What one choice delivered so far."""

    __slots__ = ("_counters", "cut", "finished", "wrote")

    def __init__(self) -> None:
        self._counters: dict[Hashable, TextCounter] = {}
        self.cut = False  # passed the allowance: nothing more of it goes out
        self.finished = False  # the upstream finished it
        self.wrote = False  # some of its output was let through

    @property
    def tokens(self) -> int:
        return sum(counter.tokens for counter in self._counters.values())

    def fit(self, key: Hashable, text: str, allowance: int, *, last: bool) -> str:
        """``text``, or the start of it that fits this choice's allowance; ``last``: the
        whole of this field (a message's, not a delta's)."""
        if self.cut:
            return ""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = TextCounter()
        others = self.tokens - counter.tokens if len(self._counters) > 1 else 0
        kept = counter.add(text, limit=allowance - others, last=last)
        if len(kept) < len(text):
            self.cut = True
        if kept:
            self.wrote = True
        return kept


class OutputMeter:
    def __init__(self, *, allowance: int, n: int) -> None:
        self.allowance = allowance
        self.n = n
        self._choices: dict[int, ChoiceOutput] = {}
        self.over_cap = False  # output was cut at the allowance, or unpaid choices dropped
        self._cut = False
        self.chunks = 0  # stream chunks metered: whether there is more since a checkpoint

    @property
    def delivered(self) -> int:
        """Output tokens passed on, all choices together."""
        return sum(choice.tokens for choice in self._choices.values())

    @property
    def any_output(self) -> bool:
        """Whether any output was let through (``delivered > 0``, without counting)."""
        return any(choice.wrote for choice in self._choices.values())

    @property
    def exhausted(self) -> bool:
        """Some choice was cut, and none is still running: the upstream has nothing more
        to say that may go out."""
        return (self._cut and len(self._choices) == self.n
                and all(c.cut or c.finished for c in self._choices.values()))

    def _choice(self, choice: object) -> ChoiceOutput | None:
        """The output of ``choice``, or None if it is not one that was paid for."""
        index = choice.get("index", 0) if isinstance(choice, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.n:
            self.over_cap = True
            return None
        output = self._choices.get(index)
        if output is None:
            output = self._choices[index] = ChoiceOutput()
        return output

    def meter_chunk(self, chunk: dict[str, Any]) -> bool:
        """Count a stream chunk's choices and cut what passes the allowance; False when none
        of its choices is left to send."""
        self.chunks += 1
        kept = []
        for choice in chunk.get("choices") or ():
            output = self._metered(choice, "delta", whole=False)
            if output is None:
                continue
            if choice.get("finish_reason") and not output.cut:
                output.finished = True
            # Required (null) in OpenAI's chunks; some servers leave it out.
            choice.setdefault("finish_reason", None)
            kept.append(choice)
        chunk["choices"] = kept
        return bool(kept)

    def meter_answer(self, answer: dict[str, Any]) -> None:
        """Count a whole answer's choices and cut what passes the allowance."""
        choices = answer.get("choices")
        answer["choices"] = [
            choice for choice in (choices if isinstance(choices, list) else ())
            if self._metered(choice, "message", whole=True) is not None]

    def _metered(self, choice: object, key: str, *, whole: bool) -> ChoiceOutput | None:
        """Count and cut the output of one choice (a stream's ``delta``, or a ``whole``
        answer's ``message``); None when it is not to be sent: unpaid, or a stream's
        choice that already ended at its cap."""
        output = self._choice(choice)
        if output is None or (output.cut and not whole):
            return None
        assert isinstance(choice, dict)  # _choice accepts nothing else
        fields = choice.get(key)
        if isinstance(fields, dict):
            self._meter_fields(output, fields, last=whole)
        if output.cut:
            choice["finish_reason"] = "length"
            self.over_cap = self._cut = True
        return output

    # --- both ---

    def _meter_fields(self, output: ChoiceOutput, fields: dict[str, Any], *,
                      last: bool) -> None:
        """Count (and cut) the output in a delta or a message, in the order it was written;
        after a cut, what follows is removed."""
        for name in TEXT_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and value:
                fields[name] = output.fit(name, value, self.allowance, last=last)
            elif isinstance(value, list):  # content parts
                fields[name] = self._meter_parts(output, name, value, last=last)
        calls = fields.get("tool_calls")
        if isinstance(calls, list):
            kept = self._meter_calls(output, calls, last=last)
            if kept or not output.cut:
                fields["tool_calls"] = kept
            else:
                del fields["tool_calls"]  # every call came after the cut
        legacy = fields.get("function_call")
        if isinstance(legacy, dict):
            if output.cut:
                del fields["function_call"]
            else:
                self._meter_function(output, "function_call", legacy, last=last)

    def _meter_parts(self, output: ChoiceOutput, name: str, parts: list[Any], *,
                     last: bool) -> list[Any]:
        kept = []
        for i, part in enumerate(parts):
            if output.cut:
                break
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = output.fit((name, i), part["text"], self.allowance,
                                          last=last)
            kept.append(part)
        return kept

    def _meter_calls(self, output: ChoiceOutput, calls: list[Any], *,
                     last: bool) -> list[Any]:
        kept = []
        for position, call in enumerate(calls):
            if output.cut:
                break
            if isinstance(call, dict):
                # Streamed calls are told apart by their index; a message's by position.
                index = call.get("index", position)
                function = call.get("function")
                if isinstance(function, dict):
                    self._meter_function(output, ("tool", index), function, last=last)
                custom = call.get("custom")
                if isinstance(custom, dict) and isinstance(custom.get("input"), str):
                    custom["input"] = output.fit(("custom", index), custom["input"],
                                                 self.allowance, last=last)
            kept.append(call)
        return kept

    def _meter_function(self, output: ChoiceOutput, key: Hashable,
                        function: dict[str, Any], *, last: bool) -> None:
        for part in ("name", "arguments"):
            value = function.get(part)
            if isinstance(value, str) and value:
                function[part] = output.fit((key, part), value, self.allowance, last=last)
