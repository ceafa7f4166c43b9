"""The output meter: whatever the upstream streams or answers, no choice passes on more than
its allowance (counted the way the router charges it), unpaid choices pass on nothing, a
cut choice ends there with ``finish_reason: "length"``, and ``delivered`` is what went out."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from proxy.ground.tokens import count_text_tokens
from proxy.money.output_meter import TEXT_FIELDS, OutputMeter
from tests.proxy.charging.texts import split, texts

SETTINGS = settings(max_examples=200, deadline=None, database=None)

FIELD_KINDS = (*TEXT_FIELDS, "tool", "function_call")
FINISH_REASONS = ("stop", "tool_calls", "content_filter")


# --- what went out, counted as the meter counts it -------------------------------------


def texts_of(fields: dict[str, Any]) -> dict[Hashable, str]:
    """The text of each field a delta or a message carries, by the key the meter counts it
    under (a message's tool calls are told apart by position, a stream's by index)."""
    found: dict[Hashable, str] = {}
    for name in TEXT_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and value:
            found[name] = value
    for position, call in enumerate(fields.get("tool_calls") or ()):
        function = call.get("function") or {}
        for part in ("name", "arguments"):
            if function.get(part):
                found[(("tool", call.get("index", position)), part)] = function[part]
    legacy = fields.get("function_call")
    if isinstance(legacy, dict):
        for part in ("name", "arguments"):
            if legacy.get(part):
                found[("function_call", part)] = legacy[part]
    return found


def tokens_of(texts_by_key: dict[Hashable, str]) -> int:
    return sum(count_text_tokens(text) for text in texts_by_key.values())


# --- streams -----------------------------------------------------------------------------


@dataclass
class Stream:
    n: int
    allowance: int
    chunks: list[dict[str, Any]] = field(default_factory=list)


def delta_of(kind: str, text: str, call: int, first: bool) -> dict[str, Any]:
    """A delta carrying ``text`` in a field of ``kind`` (a tool call's first delta names the
    function, as OpenAI's do, and later ones carry its arguments)."""
    if kind in TEXT_FIELDS:
        return {kind: text}
    part = "name" if first else "arguments"
    if kind == "function_call":
        return {"function_call": {part: text}}
    tool: dict[str, Any] = {"index": call, "function": {part: text}}
    if first:
        tool.update(id=f"call_{call}", type="function")
        tool["function"]["arguments"] = ""
    return {"tool_calls": [tool]}


@st.composite
def choice_events(draw: st.DrawFn, index: int) -> list[dict[str, Any]]:
    """The stream choices of one choice ``index``, in order: pieces of text in its fields
    (the same field again and again, or changing), then maybe a finish."""
    events: list[dict[str, Any]] = []
    named: set[tuple[str, int]] = set()
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(FIELD_KINDS))
        call = draw(st.integers(0, 1)) if kind == "tool" else 0
        text = draw(texts(max_atoms=12))
        for piece in draw(split(text, max_pieces=8)):
            first = kind in ("tool", "function_call") and (kind, call) not in named
            named.add((kind, call))
            events.append({"index": index, "delta": delta_of(kind, piece, call, first),
                           "finish_reason": None})
    finish = draw(st.sampled_from((None, *FINISH_REASONS)))
    if finish:
        if events and draw(st.booleans()):
            events[-1]["finish_reason"] = finish
        else:
            events.append({"index": index, "delta": {}, "finish_reason": finish})
    return events


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    n = draw(st.integers(1, 3))
    stream = Stream(n=n, allowance=draw(st.integers(1, 60)))
    # An upstream that answers more choices than were asked (and paid) for.
    extra = 1 if draw(st.booleans()) else 0
    queues = [draw(choice_events(index)) for index in range(n + extra)]
    # Interleave the choices, each in its own order; "n in one chunk" takes the next event
    # of every choice into one chunk, as some upstreams do.
    together = draw(st.booleans())
    while any(queues):
        waiting = [queue for queue in queues if queue]
        if together and draw(st.booleans()):
            stream.chunks.append({"choices": [queue.pop(0) for queue in waiting]})
        else:
            queue = draw(st.sampled_from(waiting))
            stream.chunks.append({"choices": [queue.pop(0)]})
    return stream


@SETTINGS
@given(streams())
def test_a_metered_stream_never_passes_more_than_the_allowance_of_a_choice(
        stream: Stream) -> None:
    meter = OutputMeter(allowance=stream.allowance, n=stream.n)
    sent = copy.deepcopy(stream.chunks)
    passed: dict[int, dict[Hashable, str]] = defaultdict(lambda: defaultdict(str))
    cut_at: dict[int, int] = {}  # choice -> chunk number where it was cut
    finished: set[int] = set()
    seen: set[int] = set()
    dropped_unpaid = False

    for number, (original, chunk) in enumerate(zip(sent, stream.chunks, strict=True)):
        any_left = meter.meter_chunk(chunk)
        assert any_left == bool(chunk["choices"])
        out = {choice["index"]: choice for choice in chunk["choices"]}
        for choice in original["choices"]:
            index = choice["index"]
            if index >= stream.n:
                dropped_unpaid = True
                assert index not in out  # an unpaid choice passes nothing on
                continue
            seen.add(index)
            if index in cut_at:
                assert index not in out  # nothing after the cut
                continue
            assert index in out
            before = texts_of(choice["delta"])
            after = texts_of(out[index]["delta"])
            shortened = [key for key in before if after.get(key, "") != before[key]]
            for key, text in after.items():
                assert before[key].startswith(text)
            if shortened:
                # Cut where the piece would pass the allowance, and not before.
                (key,) = shortened
                whole = {**passed[index], key: passed[index][key] + before[key]}
                assert tokens_of(whole) > stream.allowance
                cut_at[index] = number
                assert out[index]["finish_reason"] == "length"
            else:
                assert out[index]["finish_reason"] == choice["finish_reason"]
                if choice["finish_reason"]:
                    finished.add(index)
            for key, text in after.items():
                passed[index][key] += text

    for index, by_key in passed.items():
        assert tokens_of(by_key) <= stream.allowance, (index, dict(by_key))
    assert meter.delivered == sum(tokens_of(by_key) for by_key in passed.values())
    assert meter.over_cap == (bool(cut_at) or dropped_unpaid)
    event(f"choices cut: {len(cut_at)} of {stream.n}")
    assert meter.exhausted == (bool(cut_at) and len(seen) == stream.n
                               and all(i in cut_at or i in finished for i in seen))


@st.composite
def unchanged_streams(draw: st.DrawFn) -> tuple[Stream, int]:
    """A stream of one choice whose output fits its allowance after every chunk, and its
    tokens. (After every chunk: a start of a text may take more tokens than the whole, as
    "'v" takes two and "'ve" one, and the meter cannot wait to see how a text goes on.)"""
    events = draw(choice_events(0))
    total: dict[Hashable, str] = defaultdict(str)
    most = 0
    for choice in events:
        for key, text in texts_of(choice["delta"]).items():
            total[key] += text
        most = max(most, tokens_of(total))
    tokens = tokens_of(total)
    allowance = max(1, most + draw(st.integers(0, 3)))
    return Stream(n=1, allowance=allowance,
                  chunks=[{"choices": [event]} for event in events]), tokens


@SETTINGS
@given(unchanged_streams())
def test_a_stream_within_its_allowance_passes_unchanged(shape: tuple[Stream, int]) -> None:
    stream, tokens = shape
    meter = OutputMeter(allowance=stream.allowance, n=1)
    sent = copy.deepcopy(stream.chunks)
    for chunk in stream.chunks:
        assert meter.meter_chunk(chunk)
    assert stream.chunks == sent
    assert not meter.over_cap
    assert not meter.exhausted
    assert meter.delivered == tokens


# --- whole answers -----------------------------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    for name in TEXT_FIELDS:
        if draw(st.booleans()):
            message[name] = draw(texts(max_atoms=20))
    if draw(st.booleans()):
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": draw(st.sampled_from(["get_weather", "search", "f"])),
                          "arguments": draw(texts(max_atoms=15))}}
            for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        message["function_call"] = {"name": "lookup", "arguments": draw(texts(max_atoms=10))}
    return message


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, int, dict[str, Any]]:
    n = draw(st.integers(1, 3))
    indexes = list(range(n + (1 if draw(st.booleans()) else 0)))
    choices = [{"index": index, "message": draw(messages()),
                "finish_reason": draw(st.sampled_from(FINISH_REASONS))}
               for index in draw(st.permutations(indexes))]
    return n, draw(st.integers(1, 60)), {"object": "chat.completion", "choices": choices}


@SETTINGS
@given(answers())
def test_a_metered_answer_never_passes_more_than_the_allowance_of_a_choice(
        shape: tuple[int, int, dict[str, Any]]) -> None:
    n, allowance, answer = shape
    sent = copy.deepcopy(answer)
    meter = OutputMeter(allowance=allowance, n=n)
    meter.meter_answer(answer)

    out = {choice["index"]: choice for choice in answer["choices"]}
    assert set(out) == {choice["index"] for choice in sent["choices"]} & set(range(n))
    any_cut = False
    delivered = 0
    for choice in sent["choices"]:
        index = choice["index"]
        if index >= n:
            continue
        before, after = texts_of(choice["message"]), texts_of(out[index]["message"])
        for key, text in after.items():
            assert before[key].startswith(text)
        cut = after != before
        any_cut |= cut
        tokens = tokens_of(after)
        delivered += tokens
        assert tokens <= allowance
        if cut:
            assert out[index]["finish_reason"] == "length"
            assert tokens_of(before) > allowance  # cut only what did not fit
        else:
            assert out[index] == choice
    assert meter.delivered == delivered
    assert meter.over_cap == (any_cut or len(sent["choices"]) > n)
    event(f"cut: {any_cut}")
