"""Counting a text that arrives in pieces, and cutting it at a number of tokens.

A stream's output arrives a token or a word at a time. Counting the whole text again on
every piece would cost time growing with the square of the answer; counting each piece on
its own would miscount wherever the upstream's pieces split what ``o200k_base`` treats as
one token. ``TextCounter`` keeps the count of everything up to the last point where the
tokenizer's pre-tokenizer must split whatever follows, and counts again only what came
after it, so its count is always ``count_text_tokens`` of the whole text.

Where that point is: o200k_base first splits text with a regular expression whose only
patterns that can hold a letter are runs of letters (and marks), optionally led by one
non-letter and followed by an English contraction (``'s``, ``'ll``...). Such a run cannot
go past a character that is not a letter, a mark or an apostrophe, and nothing else can
hold a letter, so a letter followed by such a character always ends a pre-token there: the
count of the text is the count of what is before that point plus the count of what is
after it, whatever comes later. Prose, code and JSON have such points every few characters;
a text with none for ``FORCED_SPLIT_CHARS`` (a very long run of letters) is split anyway.
Cutting a pre-token in two can move the tokenizer's merges either way, so such a split is
counted ``FORCED_SPLIT_MARGIN`` tokens high: never lower than the whole text, a token or
two higher per 2,048 characters of a run that has no natural end.
"""

from __future__ import annotations

import unicodedata

from proxy.ground.tokens import count_text_tokens, encode_text, text_of_tokens

# A tail with no split point is counted on its own past this length, so one pathological
# word cannot make every later piece cost its whole length again.
FORCED_SPLIT_CHARS = 2048
# What a forced split adds to its count, so that the sum never falls below the whole's.
FORCED_SPLIT_MARGIN = 2


def _continues_word(char: str) -> bool:
    """Whether ``char`` may extend a run of letters in o200k_base's pre-tokenizer."""
    return char.isalpha() or char == "'" or unicodedata.category(char).startswith("M")


def _last_split(text: str, start: int = 1) -> int:
    """The last index i >= ``start`` (and > 0) at which ``text[:i]`` ends a pre-token
    whatever follows, or 0."""
    for i in range(len(text) - 1, max(start, 1) - 1, -1):
        if text[i - 1].isalpha() and not _continues_word(text[i]):
            return i
    return 0


class TextCounter:
    """The o200k_base tokens of a text that arrives piece by piece."""

    __slots__ = ("_committed", "_tail", "_tail_tokens")

    def __init__(self) -> None:
        self._committed = 0  # tokens of the text before ``_tail``
        self._tail = ""
        self._tail_tokens: int | None = 0  # None: not counted since it last changed

    @property
    def tokens(self) -> int:
        if self._tail_tokens is None:
            self._tail_tokens = count_text_tokens(self._tail)
        return self._committed + self._tail_tokens

    def add(self, piece: str, *, limit: int | None = None, last: bool = False) -> str:
        """Count ``piece``; return what of it fits in ``limit`` tokens for the whole text
        (all of it without a limit). Only what is returned is counted; once a piece comes
        back shorter, the text is meant to end there. ``last``: no piece follows (a whole
        answer's text), so the text is counted once, with no split point looked for."""
        if not piece:
            return piece
        tail = self._tail + piece
        if last:
            tokens = count_text_tokens(tail)
            if limit is not None and self._committed + tokens > limit:
                piece = self._fitting(piece, limit - self._committed)
                tail = self._tail + piece
                tokens = count_text_tokens(tail)
            self._tail, self._tail_tokens = tail, tokens
            return piece
        # A token is at least one byte and a character at most four: far from the limit,
        # the tail need not be counted to know that it fits.
        if (limit is not None and self._committed + 4 * len(tail) > limit
                and self._committed + count_text_tokens(tail) > limit):
            piece = self._fitting(piece, limit - self._committed)
            tail = self._tail + piece
        # The tail had no split point before this piece: only the new end can hold one.
        split = _last_split(tail, len(self._tail))
        if split:
            self._committed += count_text_tokens(tail[:split])
            tail = tail[split:]
        elif len(tail) > FORCED_SPLIT_CHARS:
            self._committed += count_text_tokens(tail) + FORCED_SPLIT_MARGIN
            if limit is not None and self._committed > limit:
                # The margin stands for merges with what follows, and within it of the
                # limit nothing more may follow: the count stays at the limit (the tail
                # fitted, so still at least the text's own) and the next piece is cut to
                # nothing, which ends the text.
                self._committed = limit
            tail = ""
        self._tail, self._tail_tokens = tail, None
        return piece

    def _fitting(self, piece: str, budget: int) -> str:
        """The longest start of ``piece`` such that the tail and it take ``budget`` tokens
        at most."""
        if budget <= self.tokens - self._committed:
            return ""
        tokens = encode_text(self._tail + piece)
        # The first ``budget`` tokens, as text: a token may end inside a character (an emoji
        # is often two tokens); such a partial character is left out.
        kept = text_of_tokens(tokens[:budget])
        fit = piece[:max(0, len(kept) - len(self._tail))]
        # Merges across the cut can make the start of a text take more tokens than the
        # tokens it was cut from; shorten until it fits (a character or two at most).
        while fit and count_text_tokens(self._tail + fit) > budget:
            fit = fit[:-1]
        return fit


def cut_text(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to at most ``limit`` tokens, and the tokens of what is kept."""
    counter = TextCounter()
    kept = counter.add(text, limit=limit, last=True)
    return kept, counter.tokens
