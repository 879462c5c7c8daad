"""Oracle fidelity: how much of the gold answers survive tokenization, windowing and decoding.

Gold spans become one-hot start/end logits on every window that wholly contains them; the
shared decoder picks the answers back and the metrics score them. Anything below 100% is
lost to token boundaries, to windowing or to the decoder's answer-length limit, never to the
model: the ceiling of the settings. The decoder runs twice: with the ``max_answer_len`` of real
use (the report's main figures) and without a length limit (``windowing_only``), so that what
the limit costs is reported apart from what windowing costs.

The lengths those limits are about are measured here too (:func:`answer_token_lengths`,
:func:`question_token_lengths`, :func:`length_percentiles`): in tokens of the run's tokenizer,
an answer as the decoder counts it (the context tokens its span covers). ``qa-scale check-data``
reports them, and training's ``auto`` limits (:func:`qa_scale.training.recipe.resolve_auto`)
are chosen from them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..data import Example
from ..data.windows import Template, WindowConfig, build_windows, token_span
from . import metrics
from .decode import DecodeConfig, decode


@dataclass
class OracleScores:
    """Oracle percentages under one decoder setting."""

    em_any_reference: float
    """Percent of examples whose oracle answer, from some located reference, is an exact match."""
    em_first_reference: float
    """Percent exact match when only the first (training) reference is pushed through."""
    exact_text_any_reference: float
    """Percent whose oracle text equals a reference character for character (HW7 accuracy)."""
    f1_any_reference: float


@dataclass
class OracleReport:
    """Oracle scores of one data set under one tokenizer, window setting and answer-length limit."""

    examples: int
    windows: int
    max_answer_len: int
    """The decoder's limit (tokens) that the main scores below are measured with."""
    em_any_reference: float
    em_first_reference: float
    exact_text_any_reference: float
    f1_any_reference: float
    windowing_only: OracleScores
    """The same scores decoded without a length limit: what tokenization and windowing alone lose."""
    answers_longer_than_max_answer_len: int
    """First references longer than ``max_answer_len`` tokens."""
    lost_to_max_answer_len: int
    """Examples that are an exact match without the limit and not with it."""
    unreachable: list[dict] = field(default_factory=list)

    def to_dict(self, max_listed: int = 50) -> dict:
        out = {k: v for k, v in vars(self).items() if k not in ("unreachable", "windowing_only")}
        out["windowing_only"] = asdict(self.windowing_only)
        out["unreachable_count"] = len(self.unreachable)
        out["unreachable"] = self.unreachable[:max_listed]
        return out


def answer_token_lengths(examples: Iterable[Example], tok: PreTrainedTokenizerBase) -> np.ndarray:
    """Tokens of each example's first (training) reference, counted as ``decode.max_answer_len`` counts them.

    The length is that of the span of context tokens covering the answer (``last - first + 1``
    in :func:`~qa_scale.data.windows.token_span`), read off the context's own tokenization, not
    the answer text's tokenized alone (which can split differently at its edges). Examples
    without an answer, and answers that no token covers, are left out.
    """
    examples = [ex for ex in examples if ex.answers]
    if not examples:
        return np.zeros(0, np.int64)
    unique = {c: i for i, c in enumerate(dict.fromkeys(ex.context for ex in examples))}
    enc = tok(list(unique), add_special_tokens=False, return_offsets_mapping=True)
    offsets = [np.asarray(o, np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]
    out = []
    for ex in examples:
        first, last = token_span(offsets[unique[ex.context]], ex.answers[0].start, ex.answers[0].end)
        if first <= last:
            out.append(last - first + 1)
    return np.asarray(out, np.int64)


def question_token_lengths(examples: Iterable[Example], tok: PreTrainedTokenizerBase) -> np.ndarray:
    """Tokens of each question before any truncation (what ``data.windows.max_question_len`` cuts)."""
    questions = [ex.question for ex in examples]
    if not questions:
        return np.zeros(0, np.int64)
    return np.asarray([len(ids) for ids in tok(questions, add_special_tokens=False)["input_ids"]], np.int64)


def covering_length(lengths: Sequence[int] | np.ndarray, percentile: float) -> int:
    """The smallest observed length that at least ``percentile`` percent of ``lengths`` do not exceed.

    The nearest-rank percentile: the ``ceil(percentile / 100 · n)``-th smallest length, always one
    of the lengths (never interpolated below it), so a limit of this value covers at least that
    share. 0 for no lengths.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    ordered = np.sort(np.asarray(lengths, np.int64))
    if not len(ordered):
        return 0
    rank = max(math.ceil(round(percentile / 100 * len(ordered), 9)), 1)  # round: 99.9/100·1000 is 999.0000000000001
    return int(ordered[rank - 1])


def length_percentiles(lengths: Sequence[int] | np.ndarray, percentiles: Sequence[float] = (50, 90, 99)) -> dict:
    """``{"count": n, "p50": …, "p90": …, "p99": …, "max": …}`` by :func:`covering_length` (tokens)."""
    out: dict = {"count": int(len(lengths))}
    for p in percentiles:
        out[f"p{p:g}"] = covering_length(lengths, p)
    out["max"] = int(np.max(lengths)) if len(lengths) else 0
    return out


class _Best:
    """Per-example best EM / F1 / exact text over references, and EM of the first reference."""

    def __init__(self, n: int):
        self.em, self.f1, self.exact, self.first_em = (np.zeros(n) for _ in range(4))

    def add(self, i: int, pred: str, refs: list[str], first: bool) -> None:
        em = metrics.exact_match(pred, refs)
        self.em[i] = max(self.em[i], em)
        self.f1[i] = max(self.f1[i], metrics.f1(pred, refs))
        self.exact[i] = max(self.exact[i], float(pred in refs))
        if first:
            self.first_em[i] = em

    def scores(self) -> OracleScores:
        return OracleScores(*(float(100.0 * a.mean()) if len(a) else 0.0
                              for a in (self.em, self.first_em, self.exact, self.f1)))


def _why_unreachable(ex: Example, tok_offsets: np.ndarray, width: int) -> str:
    """Why no reference of ``ex`` can be produced exactly."""
    reasons = []
    for ans in ex.answers:
        first, last = token_span(tok_offsets, ans.start, ans.end)
        if first > last:
            reasons.append("no token covers the answer")
        elif tok_offsets[first, 0] != ans.start or tok_offsets[last, 1] != ans.end:
            reasons.append("not on token boundaries")
        elif last - first + 1 > width:
            reasons.append("longer than a window")
        else:
            reasons.append("cut by windowing")
    return "; ".join(dict.fromkeys(reasons)) or "no located reference"


def oracle_fidelity(examples: Sequence[Example], tok: PreTrainedTokenizerBase, config: WindowConfig,
                    references: dict[str, list[str]] | None = None, max_answer_len: int = 30) -> OracleReport:
    """Push gold spans through windows and the decoder and score what comes out.

    Args:
        examples: validated examples with located answers.
        tok: the fast tokenizer.
        config: window settings.
        references: reference texts to score against (default: the examples' answers); pass
            every reference of the file to score like the official evaluator.
        max_answer_len: the decoder's limit in real use (``decode.max_answer_len``); the main
            scores use it, ``windowing_only`` decodes without it.
    """
    examples = [ex for ex in examples if ex.answers]
    references = references or {ex.id: [a.text for a in ex.answers] for ex in examples}
    n_refs = max(len(ex.answers) for ex in examples)
    decoders = {"limited": DecodeConfig(n_best_size=1, max_answer_len=max_answer_len),
                "windowing": DecodeConfig(n_best_size=1, max_answer_len=config.max_seq_len)}  # no span is longer
    best = {name: _Best(len(examples)) for name in decoders}
    n_windows = 0
    for r in range(n_refs):
        # The r-th reference goes first so that build_windows labels it.
        rotated = [replace(ex, answers=(ex.answers[min(r, len(ex.answers) - 1)],)) for ex in examples]
        ws = build_windows(rotated, tok, config, labels=True)
        n_windows = len(ws)
        start = np.zeros(ws.input_ids.shape, np.float32)
        end = np.zeros(ws.input_ids.shape, np.float32)
        hit = ws.start_positions != ws.cls_index
        rows = np.flatnonzero(hit)
        start[rows, ws.start_positions[hit]] = 1.0
        end[rows, ws.end_positions[hit]] = 1.0
        found = np.zeros(len(examples), bool)
        found[ws.example_index[hit]] = True
        for name, decoder in decoders.items():
            preds = decode(ws, start, end, rotated, decoder).predictions
            for i, ex in enumerate(examples):
                refs = references.get(ex.id) or [a.text for a in ex.answers]
                best[name].add(i, preds[ex.id] if found[i] else "", refs, first=r == 0)
    limited, windowing = best["limited"], best["windowing"]
    tpl = Template.of(tok)
    long_answers = 0
    unreachable = []
    enc = tok([ex.context for ex in examples], add_special_tokens=False, return_offsets_mapping=True)
    q_lens = [len(x) for x in tok([ex.question for ex in examples], add_special_tokens=False,
                                  truncation=True, max_length=config.max_question_len)["input_ids"]]
    for i, ex in enumerate(examples):
        offs = np.asarray(enc["offset_mapping"][i], np.int32).reshape(-1, 2)
        first, last = token_span(offs, ex.answers[0].start, ex.answers[0].end)
        long_answers += int(last - first + 1 > max_answer_len)
        if limited.em[i] == 0:
            reason = (f"longer than max_answer_len ({max_answer_len} tokens)" if windowing.em[i] else
                      _why_unreachable(ex, offs, config.context_len(q_lens[i], tpl.n_special)))
            unreachable.append({"id": ex.id, "answers": [a.text for a in ex.answers], "reason": reason})
    main = limited.scores()
    return OracleReport(len(examples), n_windows, max_answer_len, main.em_any_reference, main.em_first_reference,
                        main.exact_text_any_reference, main.f1_any_reference, windowing.scores(), long_answers,
                        int(((windowing.em > 0) & (limited.em == 0)).sum()), unreachable)
