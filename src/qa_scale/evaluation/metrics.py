"""Exact match and F1 for Chinese extractive QA, as the CMRC 2018 evaluator computes them.

The scores reproduce the semantics of the official ``cmrc2018_evaluate.py``:

* Text is lower-cased and stripped. Every CJK unified ideograph in ``U+4E00..U+9FA5``
  and every character of :data:`PUNCTUATION` becomes one segment of its own; runs of
  anything else (Latin letters, digits, spaces, other symbols) are word-tokenized with
  NLTK.
* Exact match compares the two strings after removing :data:`PUNCTUATION`; F1 is taken
  from the longest common *contiguous* run of segments (not a subsequence), punctuation
  removed. Both are maxed over the reference answers.
* Corpus scores are percentages averaged over *all* reference questions; a question
  without a prediction scores 0 and is counted as unanswered.

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

The HW7 accuracy (NTU ML 2023 homework 7) is a separate, stricter metric: the prediction
must equal the first reference character for character, with no normalisation at all.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..common.files import atomic_open

__all__ = [
    "PUNCTUATION",
    "QuestionScore",
    "Scores",
    "evaluate",
    "exact_match",
    "f1",
    "mixed_segmentation",
    "remove_punctuation",
    "tokenizer_backend",
    "word_tokenize",
    "write_error_file",
]

# The official evaluator's list, in its order. '……' is two characters long, so the
# per-character membership test never matches it; it stays for fidelity with the script.
PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)  # fmt: skip
# A set gives the same answers as the list for single characters, only faster.
_PUNCT_CHARS = frozenset(PUNCTUATION)


def _is_cjk(char: str) -> bool:
    """Return whether ``char`` matches the official regex ``[\\u4e00-\\u9fa5]``.

    A range comparison on one character is equivalent to that regex search and avoids
    the regex engine in the innermost loop.
    """
    return "\u4e00" <= char <= "\u9fa5"


@functools.lru_cache(maxsize=None)
def _select_tokenizer() -> tuple[str, Callable[[str], list[str]]]:
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
    return _select_tokenizer()[0]


@functools.lru_cache(maxsize=1 << 16)
def _tokenize_cached(text: str) -> tuple[str, ...]:
    # Non-Chinese runs repeat a lot (years, numbers, names), and NLTK's regex pipeline is
    # the slowest part of scoring, so memoise it. Tuples keep cached values immutable.
    return tuple(_select_tokenizer()[1](text))


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
    return list(_segments(str(s), rm_punc))


@functools.lru_cache(maxsize=1 << 16)
def _segments(s: str, rm_punc: bool) -> tuple[str, ...]:
    # Reference answers are segmented once per prediction compared with them and many
    # predictions repeat, so caching whole segmentations is cheap and pays off.
    text = s.lower().strip()
    out: list[str] = []
    buffer: list[str] = []
    for char in text:
        if char in _PUNCT_CHARS:
            if rm_punc:
                continue
        elif not _is_cjk(char):
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


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of segments common to ``a`` and ``b``."""
    # autojunk=False matters: with the default, elements that make up more than 1% of a
    # sequence of 200+ items are treated as junk and never matched, which would
    # under-count long answers. Without junk, find_longest_match is exact.
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.find_longest_match(0, len(a), 0, len(b)).size


def _check_references(references: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too, and would silently be scored per character.
    if isinstance(references, str):
        raise TypeError("references must be a sequence of answer strings, not a str")


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """Return 1.0 if the prediction equals any reference after normalisation, else 0.0.

    Args:
        prediction: The predicted answer text.
        references: The reference answer texts; an empty sequence scores 0.0.
    """
    _check_references(references)
    pred = remove_punctuation(prediction)
    return float(any(remove_punctuation(ref) == pred for ref in references))


def f1(prediction: str, references: Sequence[str]) -> float:
    """Return the CMRC 2018 F1 (0..1) of a prediction, maxed over the references.

    Args:
        prediction: The predicted answer text.
        references: The reference answer texts; an empty sequence scores 0.0 (the
            official script would fail on ``max([])``).
    """
    _check_references(references)
    pred_segs = _segments(str(prediction), True)
    best = 0.0
    for ref in references:
        ref_segs = _segments(str(ref), True)
        common = _longest_common_run(ref_segs, pred_segs)
        if common == 0:
            continue
        precision = common / len(pred_segs)
        recall = common / len(ref_segs)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass
class QuestionScore:
    """Scores of one question; ``em`` and ``f1`` are in 0..1."""

    id: str
    prediction: str
    references: list[str]
    em: float
    f1: float
    answered: bool


@dataclass
class Scores:
    """Corpus scores; ``em`` and ``f1`` are percentages, ``hw7_accuracy`` a fraction."""

    em: float
    f1: float
    total: int
    answered: int
    hw7_accuracy: float | None
    per_question: list[QuestionScore] = field(default_factory=list)

    def to_dict(self, include_per_question: bool = False) -> dict:
        """Return a JSON-serialisable dict, with per-question scores only if asked."""
        out = {
            "em": self.em,
            "f1": self.f1,
            "total": self.total,
            "answered": self.answered,
            "hw7_accuracy": self.hw7_accuracy,
        }
        if include_per_question:
            out["per_question"] = [dataclasses.asdict(q) for q in self.per_question]
        return out


def evaluate(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]],
    *,
    hw7: bool = False,
) -> Scores:
    """Score predictions against references the way ``cmrc2018_evaluate.py`` does.

    Args:
        predictions: Question id to predicted answer text. Ids not in ``references``
            are ignored.
        references: Question id to reference answer texts, as a mapping or as ordered
            ``(id, answers)`` pairs. Every entry counts towards the total; ids are
            stripped before lookup, as in the official script.
        hw7: Also compute the HW7 accuracy (prediction identical to the first
            reference).

    Returns:
        The corpus :class:`Scores`, with one :class:`QuestionScore` per reference entry
        in reference order.

    Raises:
        ValueError: If ``references`` is empty (the official script divides by zero).
        TypeError: If a question's references are a bare string.
    """
    items = list(references.items()) if isinstance(references, Mapping) else list(references)
    if not items:
        raise ValueError("no reference questions to evaluate")

    per_question: list[QuestionScore] = []
    em_sum = f1_sum = hw7_sum = 0.0
    for raw_id, answers in items:
        _check_references(answers)
        answers = [str(a) for a in answers]
        qid = str(raw_id).strip()
        if qid in predictions:
            prediction = str(predictions[qid])
            em, f = exact_match(prediction, answers), f1(prediction, answers)
            # Strict equality, no normalisation: that is the whole point of HW7.
            hw7_sum += float(bool(answers) and prediction == answers[0])
            answered = True
        else:
            # Unanswered questions stay in the denominator, scoring 0.
            prediction, em, f, answered = "", 0.0, 0.0, False
        em_sum += em
        f1_sum += f
        per_question.append(QuestionScore(qid, prediction, answers, em, f, answered))

    total = len(per_question)
    return Scores(
        em=100.0 * em_sum / total,
        f1=100.0 * f1_sum / total,
        total=total,
        answered=sum(q.answered for q in per_question),
        hw7_accuracy=hw7_sum / total if hw7 else None,
        per_question=per_question,
    )


def write_error_file(scores: Scores, path: str | os.PathLike[str]) -> None:
    """Write every question as JSONL, errors first, for error analysis.

    Questions with ``em == 0`` come first, by ascending F1 (the worst first); the
    exact matches follow. Both groups keep reference order among equal keys. The file
    is written to a temporary file in the same directory and moved into place, so a
    reader never sees a half-written file.

    Args:
        scores: The result of :func:`evaluate`.
        path: Destination file; parent directories are created if missing.
    """
    errors = sorted((q for q in scores.per_question if q.em == 0), key=lambda q: q.f1)
    rest = [q for q in scores.per_question if q.em != 0]
    with atomic_open(path) as fh:
        for q in errors + rest:
            fh.write(json.dumps(dataclasses.asdict(q), ensure_ascii=False) + "\n")


def score_file(predictions: Mapping[str, str], references, predictions_path: str | os.PathLike) -> tuple[Scores, list[str]]:
    """Score predictions read from a file against a data file's references (``data.References``).

    Returns:
        The scores (HW7 accuracy when the data's format scores it) and warnings worth printing.

    Raises:
        ValueError: no predicted id is a question of the references (the wrong file, surely).
    """
    unknown = [i for i in predictions if str(i).strip() not in references]
    if predictions and len(unknown) == len(predictions):
        raise ValueError(f"{predictions_path}: none of its {len(predictions)} ids is a question of "
                         f"{references.path} (first: {unknown[0]!r}); wrong file?")
    warnings = []
    if unknown:
        warnings.append(f"{predictions_path}: {len(unknown)} id(s) are not questions of {references.path} and are "
                        f"ignored, first: {unknown[:3]}")
    scores = evaluate(predictions, references, hw7=references.exact_accuracy)
    if scores.answered < scores.total:
        warnings.append(f"{predictions_path}: {scores.total - scores.answered} of {scores.total} questions have no "
                        "prediction and score 0")
    return scores, warnings
