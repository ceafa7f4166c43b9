"""What a request is charged for: the upstream's usage when it is believable, the router's
own counts otherwise.

The upstream's ``usage`` is believed field by field:

* it is well-formed: ``prompt_tokens`` and ``completion_tokens`` are integers (not booleans,
  not floats, not text), not negative, and small enough to be real; a
  ``prompt_tokens_details.cached_tokens`` (read from the upstream's prompt cache) and
  ``cache_write_tokens`` (written to it) are likewise and together not above the prompt;
* ``prompt_tokens`` is at least 1 (every chat format spends tokens on a message) and at most
  ``PROMPT_FACTOR`` times the router's own upper bound of the prompt (the bound already
  allows for other tokenizers; past twice that, the number is not about this prompt);
* ``completion_tokens`` is at most what the hold covers (the cap plus the tolerance, per
  choice) and at least what the router itself counted in the output it delivered, less the
  tolerance (hidden reasoning tokens make an honest count larger, never smaller).

A field that fails is replaced by the router's own count (the prompt counted the way OpenAI
counts chat messages; the output delivered, counted per choice), and the record says
``estimated`` and why. So the charge is never below the output delivered (less the
tolerance) and, capped by the settle statement, never above the hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from billing.models import UsageRecord

Reason = UsageRecord.EstimateReason

# The tolerance for tokenizer differences: the router counts output with o200k_base, the
# upstream with its own tokenizer. 10 % of the count plus 2 tokens (the last, partial
# token of a cut, and tiny caps, where one token is a large share).
TOLERANCE_PERCENT = 10
TOLERANCE_TOKENS = 2
# How far past the router's upper bound of the prompt a reported prompt is still believed.
PROMPT_FACTOR = 2
# What the usage record can store, and more than any real request uses.
MAX_TOKENS = 2**31 - 1


def tolerance(tokens: int) -> int:
    """The tokens by which two tokenizers' counts of ``tokens`` tokens of text may differ."""
    return -(-tokens * TOLERANCE_PERCENT // 100) + TOLERANCE_TOKENS


def allowance(cap: int) -> int:
    """The output a choice may deliver, in the router's count, under a cap of ``cap``: the
    cap the upstream was sent, plus the tolerance (the hold covers this much)."""
    return cap + tolerance(cap)


@dataclass(frozen=True)
class Verdict:
    """The tokens a request is charged for, and where they came from."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reason: str  # an EstimateReason; "" when the upstream's usage is charged as it is
    believed: dict[str, Any] | None  # the upstream's usage, when it is charged as it is
    cache_write_tokens: int = 0  # prompt tokens the upstream wrote to its cache

    @property
    def source(self) -> str:
        return UsageRecord.Source.ESTIMATED if self.reason else UsageRecord.Source.PROVIDER


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def _detail(details: dict[str, Any], name: str) -> int | None:
    value = details.get(name)
    return 0 if value is None else _count(value)


def _well_formed(usage: dict[str, Any]) -> tuple[int, int, int, int] | None:
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    details = usage.get("prompt_tokens_details")
    if details is None:
        return prompt, completion, 0, 0
    if not isinstance(details, dict):
        return None
    cached, written = _detail(details, "cached_tokens"), _detail(details, "cache_write_tokens")
    if cached is None or written is None or cached + written > prompt:
        return None
    return prompt, completion, cached, written


def check_usage(*, reported: object, complete: bool, prompt_bound: int, cap: int, n: int,
                delivered: int, own_prompt: Callable[[], int]) -> Verdict:
    """The tokens to charge for.

    ``reported``: the upstream's last ``usage`` (anything the upstream sent, or None);
    ``complete``: the answer ended as the upstream meant it to (not cut off or cut at the
    cap); ``prompt_bound``: the router's upper bound of the prompt; ``cap`` and ``n``: the
    output cap sent upstream and the choices asked for; ``delivered``: the output tokens
    the router counted in what it passed on; ``own_prompt``: the router's count of the
    prompt, computed only if needed.
    """
    if not complete or reported is None:
        reason = Reason.NO_USAGE if complete else Reason.INCOMPLETE
        return Verdict(own_prompt(), delivered, 0, reason, None)
    counts = _well_formed(reported) if isinstance(reported, dict) else None
    if counts is None:
        return Verdict(own_prompt(), delivered, 0, Reason.MALFORMED, None)
    prompt, completion, cached, written = counts
    reason = ""
    if not 1 <= prompt <= PROMPT_FACTOR * prompt_bound:
        prompt, cached, written, reason = own_prompt(), 0, 0, Reason.PROMPT_IMPLAUSIBLE
    if completion > n * allowance(cap):
        completion, reason = delivered, Reason.COMPLETION_ABOVE_CAP
    elif completion < delivered - tolerance(delivered):
        completion, reason = delivered, Reason.COMPLETION_BELOW_OUTPUT
    return Verdict(prompt, completion, cached, reason, None if reason else reported, written)
