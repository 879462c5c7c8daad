"""CMRC 2018 segmentation: the official evaluator's punctuation list and its mixed segmentation
(every CJK ideograph and punctuation character a segment, the runs between them NLTK words).

NLTK offline fallback:
    The official script calls ``nltk.word_tokenize``, which loads the English Punkt
    sentence model from the ``punkt_tab`` data package. That package is not part of the
    ``nltk`` wheel and cannot be downloaded on machines without network access. When
    ``nltk.data.find('tokenizers/punkt_tab/english/')`` fails, this module falls back to
    the same two-stage pipeline with an *untrained* ``PunktSentenceTokenizer`` (no
    abbreviation list, no learned collocations) followed by ``NLTKWordTokenizer`` -- the
    tokenizer ``word_tokenize`` itself uses. The two differ only where a period inside a
    non-Chinese run would be judged a sentence end by one model and not the other
    (e.g. ``"mr. smith"``), which changes scores only in such rare answers. Use
    :func:`tokenizer_backend` to report which one was used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

# The official evaluator's list, in its order. '……' is two characters long, so the
# per-character membership test never matches it; it stays for fidelity with the script.
PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)  # fmt: skip
# A set gives the same answers as the list for single characters, only faster.
_PUNCT_CHARS = frozenset(PUNCTUATION)


def is_cjk(char: str) -> bool:
    """Return whether ``char`` matches the official regex ``[\\u4e00-\\u9fa5]``.

    A range comparison on one character is equivalent to that regex search and avoids
    the regex engine in the innermost loop.
    """
    return "\u4e00" <= char <= "\u9fa5"


@functools.lru_cache(maxsize=None)
def select_tokenizer() -> tuple[str, Callable[[str], list[str]]]:
    """Choose the NLTK word tokenizer once per process (see the module docstring)."""
    # Imported lazily: nltk takes a noticeable time to import and most users of this
    # package import metrics only to evaluate at the end of a run.
    import nltk
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        sentence_splitter = PunktSentenceTokenizer()
        word_splitter = NLTKWordTokenizer()

        def fallback(text: str) -> list[str]:
            # Same structure as nltk.word_tokenize: split into sentences, then words.
            return [
                token
                for sentence in sentence_splitter.tokenize(text)
                for token in word_splitter.tokenize(sentence)
            ]

        return "fallback", fallback
    return "punkt_tab", nltk.word_tokenize


def tokenizer_backend() -> str:
    """Return ``"punkt_tab"`` if ``nltk.word_tokenize`` is used, else ``"fallback"``."""
    return select_tokenizer()[0]


@functools.lru_cache(maxsize=1 << 16)
def _tokenize_cached(text: str) -> tuple[str, ...]:
    # Non-Chinese runs repeat a lot (years, numbers, names), and NLTK's regex pipeline is
    # the slowest part of scoring, so memoise it. Tuples keep cached values immutable.
    return tuple(select_tokenizer()[1](text))


def word_tokenize(text: str) -> list[str]:
    """Tokenize a non-Chinese run of text the way the official evaluator does.

    Args:
        text: A run of characters that contains no CJK ideograph and no punctuation
            from :data:`PUNCTUATION`.

    Returns:
        The NLTK word tokens of ``text`` (an empty list for whitespace-only text).
    """
    return list(_tokenize_cached(text))


def mixed_segmentation(s: object, rm_punc: bool = False) -> list[str]:
    """Split text into CJK characters, punctuation characters and NLTK words.

    Args:
        s: The text; converted with ``str()`` as the official script does.
        rm_punc: Drop characters of :data:`PUNCTUATION` instead of keeping them as
            segments.

    Returns:
        The list of segments, in order.
    """
    return list(segments(str(s), rm_punc))


@functools.lru_cache(maxsize=1 << 16)
def segments(s: str, rm_punc: bool) -> tuple[str, ...]:
    """The segments of ``mixed_segmentation(s, rm_punc)`` as a tuple, cached (``s`` must be a str)."""
    # Reference answers are segmented once per prediction compared with them and many
    # predictions repeat, so caching whole segmentations is cheap and pays off.
    text = s.lower().strip()
    out: list[str] = []
    buffer: list[str] = []
    for char in text:
        if char in _PUNCT_CHARS:
            if rm_punc:
                continue
        elif not is_cjk(char):
            buffer.append(char)
            continue
        # A CJK or punctuation character ends the pending non-Chinese run.
        if buffer:
            out.extend(_tokenize_cached("".join(buffer)))
            buffer.clear()
        out.append(char)
    if buffer:
        out.extend(_tokenize_cached("".join(buffer)))
    return tuple(out)


def remove_punctuation(s: object) -> str:
    """Lower-case and strip ``s`` and drop every character of :data:`PUNCTUATION`."""
    return "".join(c for c in str(s).lower().strip() if c not in _PUNCT_CHARS)
