"""What the lying upstream is told to do wrong, and the output that follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from proxy.ground.tokens import count_text_tokens, encode_text, token_pieces

DEFAULT_REPLY = ("The lying upstream answers every request with this paragraph. It is long "
                 "enough to be cut at a small cap, plain enough to count by eye, and it says "
                 "nothing a test would mistake for an instruction. Each sentence adds a dozen "
                 "tokens or so, and this last one, a little longer, ends it.")
# Repeated after the reply when ``extra_tokens`` asks for more output than the reply holds.
FILLER = ("Filler keeps coming after the reply ends, because this upstream ignores the cap "
          "it was given and goes on writing words that nobody asked for.")
TOOL_NAME = "lookup"

ReadsCap = Literal["max_tokens", "max_completion_tokens", "either", "none"]
UsageLie = Literal["honest", "missing", "zero", "negative", "string", "float", "bool", "huge",
                   "over", "under", "prompt_huge", "prompt_zero", "cached_over_prompt",
                   "scaled"]
UsagePlacement = Literal["own_chunk", "beside_empty_delta", "beside_finish", "beside_content",
                         "early", "every_chunk"]


@dataclass(frozen=True)
class Lies:
    """How the server misbehaves; every field can be changed between requests."""

    reply: str = DEFAULT_REPLY
    reads_cap: ReadsCap = "either"
    extra_tokens: int = 0  # output tokens past the cap it read (past the reply if none)
    usage: UsageLie = "honest"
    usage_scale: float = 1.1  # "scaled": another tokenizer's count, round(sent * scale)
    usage_placement: UsagePlacement = "own_chunk"  # streams only
    n_in_one_chunk: bool = False
    extra_choice: bool = False  # a choice with index n, one more than asked for
    tool_call_args: str | None = None
    reasoning: str | None = None
    chunk_delay: float = 0.0
    # Stream: send this many chunks, then drop the connection (no [DONE]). JSON: drop it
    # without an answer.
    die_after_chunks: int | None = None

    @property
    def reply_tokens(self) -> int:
        """The ``o200k_base`` tokens of ``reply``."""
        return count_text_tokens(self.reply)

    def cap(self, body: dict[str, Any]) -> int | None:
        """The output cap this server obeys for ``body``; None when it reads none."""
        def read(name: str) -> int | None:
            value = body.get(name)
            # bool is an int to Python, but not a cap to an upstream.
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            return value if ok else None

        caps = {"max_tokens": read("max_tokens"),
                "max_completion_tokens": read("max_completion_tokens")}
        if self.reads_cap == "none":
            return None
        if self.reads_cap == "either":
            present = [cap for cap in caps.values() if cap is not None]
            return min(present) if present else None
        return caps[self.reads_cap]


@dataclass(frozen=True)
class Output:
    """What every choice produces: token-sized pieces of each kind, in this order."""

    reasoning: list[str]
    content: list[str]
    tool_args: list[str] | None  # None: no tool call
    finish_reason: str


def _filler(tokens: int) -> list[int]:
    repeats = tokens // count_text_tokens(FILLER) + 1
    return encode_text(" " + " ".join([FILLER] * repeats))[:tokens]


def plan_output(lies: Lies, cap: int | None) -> Output:
    """What each choice produces for a request whose cap (as ``lies`` reads it) is ``cap``."""
    reasoning, content = encode_text(lies.reasoning or ""), encode_text(lies.reply)
    args = encode_text(lies.tool_call_args or "")
    natural = len(reasoning) + len(content) + len(args)
    # An honest model stops at its natural end or at the cap, whichever comes first; the
    # lie is the extra tokens past that.
    budget = (natural if cap is None else min(cap, natural)) + lies.extra_tokens
    if budget > natural:
        content += _filler(budget - natural)
    # The cap covers reasoning and tool calls too (as max_completion_tokens does at OpenAI),
    # spent in the order they are produced.
    kept: list[list[int]] = []
    for tokens in (reasoning, content, args):
        kept.append(tokens[:max(budget - sum(map(len, kept)), 0)])
    calls = lies.tool_call_args is not None and (bool(kept[2]) or not args)
    finish = "stop" if budget == natural else "length"
    if calls and finish == "stop":
        finish = "tool_calls"
    return Output(reasoning=token_pieces(kept[0]), content=token_pieces(kept[1]),
                  tool_args=token_pieces(kept[2]) if calls else None, finish_reason=finish)
