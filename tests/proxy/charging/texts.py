"""Hypothesis strategies for the texts a model writes: prose in several scripts, CJK, emoji,
combining marks, contractions, digits, whitespace, punctuation, JSON and code; and ways to
cut a text into the pieces a stream delivers it in."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèêëàçñøåßÆœ\u017f"  # and a long s
SCRIPTS = (
    "абвгдежзийклмнопрстуфхцчшщъыьэюяЖЩЯ"  # Cyrillic
    "αβγδεζηθικλμνξοπρστυφχψωΣΩ"  # Greek
    "مرحبابالعالم"  # Arabic
    "שלוםעולם"  # Hebrew
    "नमस्तेदुनियाक्षि"  # Devanagari, with vowel signs and virama (marks)
    "สวัสดีชาวโลก"  # Thai, with marks
    "안녕하세요세계"  # Hangul
    "ǅᾈ"  # title case letters
    "ʰˢ"  # modifier letters
)
CJK = "日本語中文字漢字テキストひらがなカタカナ、。「」"
EMOJI = ["😀", "🚀", "🦜", "🧬", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤️", "☕", "\u200d", "\ufe0f"]
MARKS = "\u0301\u0308\u0327\u0303\u20dd\u0489\u0903"
APOSTROPHES = ["'", "\u2019", "`", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL"]
DIGITS = "0123456789٣३²½Ⅻ"
WHITESPACE = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\u00a0", "\u3000", "    "]
PUNCTUATION = ".,;:!?-_()[]{}<>\"/\\|@#$%^&*+=~…—«»¿¡"
FRAGMENTS = [
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2, 3]}}',
    '{"a":1,"b":[true,false,null],"c":{"d":"e\\"f"}}',
    "def f(x):\n    return x * 2\n",
    "for (let i = 0; i < n; i++) { sum += a[i]; }",
    "SELECT id, name FROM users WHERE id = 42;",
    "<|endoftext|>",
    "https://example.com/a/b?c=d&e=f#g",
    "I don't think it's what they'd've wanted, y'all.",
    "naïve café résumé",
    "x\u0301y\u0308z",
    "1234567890123",
]

atoms = st.one_of(
    st.text(alphabet=LATIN, min_size=1, max_size=8),
    st.text(alphabet=SCRIPTS, min_size=1, max_size=6),
    st.text(alphabet=CJK, min_size=1, max_size=4),
    st.sampled_from(EMOJI),
    st.text(alphabet=MARKS, min_size=1, max_size=2),
    st.sampled_from(APOSTROPHES),
    st.text(alphabet=DIGITS, min_size=1, max_size=5),
    st.sampled_from(WHITESPACE),
    st.text(alphabet=PUNCTUATION, min_size=1, max_size=3),
    st.sampled_from(FRAGMENTS),
    # Anything else Unicode has (no lone surrogates, which JSON text does not decode to).
    st.text(min_size=1, max_size=3),
)


def texts(*, max_atoms: int = 40) -> st.SearchStrategy[str]:
    """Texts of up to ``max_atoms`` atoms: a few hundred characters at most."""
    return st.lists(atoms, max_size=max_atoms).map("".join)


@st.composite
def split(draw: st.DrawFn, text: str, *, max_pieces: int = 30) -> list[str]:
    """``text`` cut at random places into pieces (none empty, except an empty text's
    single piece); joined, they are ``text`` again."""
    if len(text) < 2:
        return [text]
    cuts = draw(st.lists(st.integers(1, len(text) - 1), max_size=max_pieces, unique=True))
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def pieces(draw: st.DrawFn, *, max_atoms: int = 40, max_pieces: int = 30) -> list[str]:
    """A text, as the pieces a stream delivers it in."""
    return draw(split(draw(texts(max_atoms=max_atoms)), max_pieces=max_pieces))
