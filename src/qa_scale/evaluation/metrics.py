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

Nothing silent: scoring that cannot mean anything is refused rather than reported as 0 —
predictions that share no id with the references (the wrong file), and references in which no
question has an answer (a test split) unless ``allow_unanswerable`` says so, in which case the
scores count those questions (``no_reference``).

The segmentation (the punctuation list, NLTK words and their offline fallback) is in
:mod:`.segmentation`; its public names are re-exported here.

The HW7 accuracy (NTU ML 2023 homework 7) is a separate, stricter metric: the prediction
must equal the first reference character for character, with no normalisation at all.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..common.outputs import atomic_open
from .segmentation import (
    PUNCTUATION,
    mixed_segmentation,
    remove_punctuation,
    segments,
    tokenizer_backend,
    word_tokenize,
)

__all__ = [
    "PUNCTUATION",
    "QuestionScore",
    "Scores",
    "check_scorable",
    "evaluate",
    "exact_match",
    "f1",
    "mixed_segmentation",
    "remove_punctuation",
    "tokenizer_backend",
    "word_tokenize",
    "write_error_file",
]


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
    pred_segs = segments(str(prediction), True)
    best = 0.0
    for ref in references:
        ref_segs = segments(str(ref), True)
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
    no_reference: int = 0  # questions without any reference answer (they score 0 whatever is predicted)

    def to_dict(self, include_per_question: bool = False) -> dict:
        """Return a JSON-serialisable dict, with per-question scores only if asked."""
        out = {
            "em": self.em,
            "f1": self.f1,
            "total": self.total,
            "answered": self.answered,
            "no_reference": self.no_reference,
            "hw7_accuracy": self.hw7_accuracy,
        }
        if include_per_question:
            out["per_question"] = [dataclasses.asdict(q) for q in self.per_question]
        return out


def _references_name(references: object) -> str:
    path = getattr(references, "path", None)
    return str(path) if path else "the references"


def check_scorable(predicted_ids: Iterable[str], references: Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]],
                   *, predictions_from: str | os.PathLike | None = None, allow_unanswerable: bool = False) -> None:
    """Refuse scoring that cannot mean anything, before any work is done.

    Args:
        predicted_ids: the ids that are (or will be) predicted.
        references: question id → reference answers (a ``data.References`` names its file).
        predictions_from: the file the predictions come from (or are made on), for the message.
        allow_unanswerable: score references in which no question has an answer anyway.

    Raises:
        ValueError: no predicted id is a question of the references (naming both files), or no
            question of the references has an answer and ``allow_unanswerable`` is not set.
    """
    items = list(references.items()) if isinstance(references, Mapping) else list(references)
    if not items:
        raise ValueError(f"{_references_name(references)}: no reference questions to evaluate")
    predicted = {str(i) for i in predicted_ids}
    if not any(str(qid).strip() in predicted for qid, _ in items):
        source = f" of {predictions_from}" if predictions_from else ""
        first = f" (first predicted: {next(iter(sorted(predicted)))!r}, first question: {str(items[0][0])!r})" \
            if predicted else ""
        raise ValueError(f"{_references_name(references)}: none of its {len(items)} questions is among the "
                         f"{len(predicted)} predicted ids{source}{first}: wrong references file?")
    if not allow_unanswerable and not any(any(str(a).strip() for a in answers) for _, answers in items):
        raise ValueError(f"{_references_name(references)}: no question has a reference answer (a test file?): every "
                         "score against it would be 0 whatever was predicted; score against data with answers "
                         "(`qa-scale evaluate --allow-unanswerable` scores it anyway)")


def evaluate(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]],
    *,
    hw7: bool = False,
    allow_unanswerable: bool = False,
    predictions_from: str | os.PathLike | None = None,
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
        allow_unanswerable: Score references in which no question has an answer (every
            score is then 0; ``no_reference`` says how many such questions were scored).
        predictions_from: Where the predictions come from, for error messages.

    Returns:
        The corpus :class:`Scores`, with one :class:`QuestionScore` per reference entry
        in reference order.

    Raises:
        ValueError: If ``references`` is empty (the official script divides by zero), shares
            no id with ``predictions``, or (unless ``allow_unanswerable``) has no answer at all
            (see :func:`check_scorable`).
        TypeError: If a question's references are a bare string.
    """
    items = list(references.items()) if isinstance(references, Mapping) else list(references)
    if not items:
        raise ValueError("no reference questions to evaluate")
    for _, answers in items:
        _check_references(answers)
    check_scorable(predictions, references, predictions_from=predictions_from,
                   allow_unanswerable=allow_unanswerable)

    per_question: list[QuestionScore] = []
    em_sum = f1_sum = hw7_sum = 0.0
    no_reference = 0
    for raw_id, answers in items:
        answers = [str(a) for a in answers]
        no_reference += not any(a.strip() for a in answers)
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
        no_reference=no_reference,
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


def score_file(predictions: Mapping[str, str], references, predictions_path: str | os.PathLike,
               allow_unanswerable: bool = False) -> tuple[Scores, list[str]]:
    """Score predictions read from a file against a data file's references (``data.References``).

    Args:
        predictions: id → predicted answer, as read from ``predictions_path``.
        references: the data file's references.
        predictions_path: the predictions file, for messages.
        allow_unanswerable: score a references file in which no question has an answer (a test
            file) anyway; a warning then says how many questions had none.

    Returns:
        The scores (HW7 accuracy when the data's format scores it) and warnings worth printing.

    Raises:
        ValueError: no predicted id is a question of the references (the wrong file, surely), or no
            question has a reference answer and ``allow_unanswerable`` is not set; both files named.
    """
    unknown = [i for i in predictions if str(i).strip() not in references]
    if predictions and len(unknown) == len(predictions):
        raise ValueError(f"{predictions_path}: none of its {len(predictions)} ids is a question of "
                         f"{references.path} (first: {unknown[0]!r}); wrong file?")
    if not predictions:
        raise ValueError(f"{predictions_path}: holds no prediction, so nothing of {references.path} can be scored")
    warnings = []
    if unknown:
        warnings.append(f"{predictions_path}: {len(unknown)} id(s) are not questions of {references.path} and are "
                        f"ignored, first: {unknown[:3]}")
    scores = evaluate(predictions, references, hw7=references.exact_accuracy, allow_unanswerable=allow_unanswerable,
                      predictions_from=predictions_path)
    if scores.answered < scores.total:
        warnings.append(f"{predictions_path}: {scores.total - scores.answered} of {scores.total} questions have no "
                        "prediction and score 0")
    if scores.no_reference:
        warnings.append(f"{references.path}: {scores.no_reference} of {scores.total} questions have no reference "
                        "answer and score 0 whatever was predicted")
    return scores, warnings
