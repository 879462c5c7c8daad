"""The n-best decoder shared by single models and ensembles: window logits → answers.

Every window of a data set is decoded at once with array operations. The answer is the
*exact* best valid span (context tokens, start ≤ end, at most ``max_answer_len`` tokens) by
start logit + end logit over all of an example's windows: for every start, the best end
within reach is a sliding-window maximum of the end logits, so no span is missed (a top-k
search, as in ``utils_qa``, can miss the best valid span when its top positions are invalid).
N-best lists, when asked for, come from the top ``n_best_size`` context starts × ends of each
window, like ``utils_qa`` but restricted to the context first, one entry per distinct span.
Answer text is sliced from the original context through the offset mapping, never produced
by ``tokenizer.decode`` (which drops spaces and turns rare characters into ``[UNK]``).

Hand-written because no library decodes span logits: ``transformers`` ships this only as
example code (``utils_qa.py``) that loops in Python over windows and candidate pairs.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..common.settings import check_fields, option
from ..data import Example
from ..data.windows import WindowSet

# Opening mark → closing mark, for the optional clean-up of unbalanced marks at span edges.
PAIRED_MARKS = {"「": "」", "《": "》", "“": "”", "（": "）", "『": "』", "(": ")"}
_CLOSING = {v: k for k, v in PAIRED_MARKS.items()}


@dataclass(frozen=True)
class DecodeConfig:
    """How spans are chosen."""

    n_best_size: int = option(20, "start and end candidates per window, and length of each n-best list", ge=1)
    max_answer_len: int = option(30, "longest answer, in tokens", ge=1)
    null_threshold: float | None = option(
        None, "predict the empty answer when null score minus best span score exceeds this; default: never")
    balance_marks: bool = option(
        False, "repair unbalanced 「」《》“”（）『』 at the edges of the chosen span")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class Decoded:
    """Answers of every example, with n-best lists when they were asked for."""

    predictions: dict[str, str]
    best_score: np.ndarray  # [E] best span score (-inf where no valid span exists)
    best_span: np.ndarray  # [E, 2] character [start, end) of the best span (-1 where none)
    null_score: np.ndarray  # [E] lowest CLS start+end score over the example's windows
    nbest: dict[str, list[dict]] | None = None

    @property
    def no_span(self) -> list[str]:
        """Ids of examples whose windows contain no valid span at all."""
        ids = list(self.predictions)
        return [ids[i] for i in np.flatnonzero(~np.isfinite(self.best_score))]


def balance_span(context: str, start: int, end: int) -> tuple[int, int]:
    """Extend or trim a span [start, end) so that paired marks at its edges balance.

    An opening mark at the start without its closing mark inside is closed by the character
    just after the span when that is the closing mark, and dropped otherwise; likewise for a
    closing mark at the end.
    """
    text = context[start:end]
    if text and text[0] in PAIRED_MARKS and PAIRED_MARKS[text[0]] not in text[1:]:
        if end < len(context) and context[end] == PAIRED_MARKS[text[0]]:
            end += 1
        else:
            start += 1
    text = context[start:end]
    if text and text[-1] in _CLOSING and _CLOSING[text[-1]] not in text[:-1]:
        if start > 0 and context[start - 1] == _CLOSING[text[-1]]:
            start -= 1
        else:
            end -= 1
    return start, max(end, start)


_BLOCK = 1024  # windows per block of the span search


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))


def _band_max(x: np.ndarray, width: int) -> np.ndarray:
    """``out[:, i] = max(x[:, i : i + width])`` (−inf past the end), by doubling spans."""
    W, L = x.shape
    padded = np.full((W, L + width), -np.inf, np.float32)
    padded[:, :L] = x
    out, span = padded, 1
    while span * 2 <= width:  # out[:, i] covers [i, i + span)
        out = np.maximum(out[:, : out.shape[1] - span], out[:, span:])
        span *= 2
    if span < width:  # two overlapping power-of-two spans cover [i, i + width)
        out = np.maximum(out[:, : out.shape[1] - (width - span)], out[:, width - span :])
    return out[:, :L]


def best_spans(start: np.ndarray, end: np.ndarray, max_answer_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact best valid span of every window: (score [W], start token [W], end token [W]).

    ``start``/``end`` are logits with −inf outside the context; the score is −inf where a
    window has no valid span.
    """
    W, L = start.shape
    width = min(max_answer_len, L)
    reach = _band_max(end, width)  # best end logit within reach of each start
    i = np.argmax(start + reach, axis=1)
    rows = np.arange(W)
    ends = np.minimum(i[:, None] + np.arange(width)[None, :], L - 1)
    cand = np.where(i[:, None] + np.arange(width)[None, :] < L, end[rows[:, None], ends], -np.inf)
    j = i + np.argmax(cand, axis=1)
    return start[rows, i] + end[rows, j], i, j


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row (unordered)."""
    if k >= x.shape[1]:
        return np.broadcast_to(np.arange(x.shape[1]), x.shape).copy()
    return np.argpartition(x, x.shape[1] - k, axis=1)[:, x.shape[1] - k :]


def decode(windows: WindowSet, start_logits: np.ndarray, end_logits: np.ndarray,
           examples: Sequence[Example], config: DecodeConfig = DecodeConfig(), nbest: bool = False) -> Decoded:
    """Choose each example's answer from its windows' start/end logits.

    Args:
        windows: the window set the logits were computed on.
        start_logits: [W, L'] logits, L' ≤ max_seq_len (extra padding columns are ignored).
        end_logits: [W, L'].
        examples: the examples of ``windows``, in the same order (their contexts are sliced).
        config: decoding settings.
        nbest: also build n-best lists (texts, scores, probabilities).

    Returns:
        Predictions (empty string where no span is valid or the null answer wins).
    """
    if [ex.id for ex in examples] != windows.example_ids:
        raise ValueError("examples do not match the window set's example ids (order matters)")
    start_logits, end_logits = np.asarray(start_logits, np.float32), np.asarray(end_logits, np.float32)
    W, L = start_logits.shape
    if len(windows) != W or end_logits.shape != (W, L) or L > windows.input_ids.shape[1]:
        raise ValueError(f"logits of shape {start_logits.shape}/{end_logits.shape} do not fit "
                         f"{len(windows)} windows of {windows.input_ids.shape[1]} tokens")
    offsets = windows.offsets[:, :L]
    in_ctx = windows.context_mask[:, :L]
    s = np.where(in_ctx, start_logits, -np.inf)
    e = np.where(in_ctx, end_logits, -np.inf)
    # Row blocks in threads: NumPy releases the GIL on these array operations.
    blocks = [slice(a, min(a + _BLOCK, W)) for a in range(0, W, _BLOCK)]
    parts = list(_pool().map(lambda b: best_spans(s[b], e[b], config.max_answer_len), blocks))
    score, i, j = (np.concatenate([p[n] for p in parts]) for n in range(3))

    n_ex, ex_of = len(examples), windows.example_index
    order = np.lexsort((-score, ex_of))  # per example, its best window first
    first = order[np.r_[True, ex_of[order][1:] != ex_of[order][:-1]]]
    best_score = np.full(n_ex, -np.inf, np.float32)
    best_span = np.full((n_ex, 2), -1, np.int64)
    found = first[np.isfinite(score[first])]
    best_score[ex_of[found]] = score[found]
    best_span[ex_of[found]] = np.stack([offsets[found, i[found], 0], offsets[found, j[found], 1]], 1)
    rows = np.arange(W)
    null = start_logits[rows, windows.cls_index] + end_logits[rows, windows.cls_index]
    null_score = np.full(n_ex, np.inf, np.float32)
    np.minimum.at(null_score, ex_of, null)

    predictions = {}
    for n, (ex, (a, b)) in enumerate(zip(examples, best_span.tolist())):
        if a < 0 or (config.null_threshold is not None and null_score[n] - best_score[n] > config.null_threshold):
            predictions[ex.id] = ""
            continue
        if config.balance_marks:
            a, b = balance_span(ex.context, a, b)
        predictions[ex.id] = ex.context[a:b]
    out = Decoded(predictions, best_score, best_span, null_score)
    if nbest:
        out.nbest = _nbest(windows, s, e, offsets, examples, config, out)
    return out


def _nbest(windows: WindowSet, s: np.ndarray, e: np.ndarray, offsets: np.ndarray,
           examples: Sequence[Example], config: DecodeConfig, decoded: Decoded) -> dict[str, list[dict]]:
    """N-best lists from each window's top context starts × ends, one entry per distinct span."""
    W, L = s.shape
    k = min(config.n_best_size, L)
    top_s, top_e = _top_k(s, k), _top_k(e, k)
    S, E = top_s[:, :, None], top_e[:, None, :]
    score = np.take_along_axis(s, top_s, 1)[:, :, None] + np.take_along_axis(e, top_e, 1)[:, None, :]
    ok = (E >= S) & (E - S < config.max_answer_len)
    score = np.where(ok, score, -np.inf).reshape(W, k * k)
    m = min(config.n_best_size, k * k)
    pick = _top_k(score, m)  # best m pairs of each window
    cand_score = np.take_along_axis(score, pick, 1).ravel()
    cand_w = np.repeat(np.arange(W), m)
    cand_s = np.take_along_axis(np.broadcast_to(S, (W, k, k)).reshape(W, -1), pick, 1).ravel()
    cand_e = np.take_along_axis(np.broadcast_to(E, (W, k, k)).reshape(W, -1), pick, 1).ravel()
    keep = np.isfinite(cand_score)
    cand_score, cand_w, cand_s, cand_e = cand_score[keep], cand_w[keep], cand_s[keep], cand_e[keep]
    cand_ex = windows.example_index[cand_w]
    char_s, char_e = offsets[cand_w, cand_s, 0], offsets[cand_w, cand_e, 1]

    # Overlapping windows find the same span twice: keep the best copy of each (example, span).
    order = np.lexsort((-cand_score, char_e, char_s, cand_ex))
    key = np.stack([cand_ex[order], char_s[order], char_e[order]], 1)
    order = order[np.r_[True, np.any(key[1:] != key[:-1], axis=1)]]
    order = order[np.lexsort((-cand_score[order], cand_ex[order]))]
    ex_sorted = cand_ex[order]
    rank = np.arange(len(order)) - np.searchsorted(ex_sorted, ex_sorted, side="left")
    order = order[rank < config.n_best_size]

    lists: dict[str, list[dict]] = {ex.id: [] for ex in examples}
    for n, a, b, sc, w in zip(cand_ex[order].tolist(), char_s[order].tolist(), char_e[order].tolist(),
                              cand_score[order].tolist(), cand_w[order].tolist()):
        ex = examples[n]
        lists[ex.id].append({"text": ex.context[a:b], "start": a, "score": sc, "window": w})
    for n, ex in enumerate(examples):
        cands = lists[ex.id]
        best = decoded.best_span[n]
        if best[0] >= 0 and (not cands or cands[0]["score"] < decoded.best_score[n] - 1e-6):
            # the exact search found a span the top-k grid missed: it leads the list
            cands.insert(0, {"text": ex.context[best[0]:best[1]], "start": int(best[0]),
                             "score": float(decoded.best_score[n]), "window": -1})
            del cands[config.n_best_size:]
        if cands:
            scores = np.array([c["score"] for c in cands], np.float64)
            probs = np.exp(scores - scores.max())
            for c, p in zip(cands, (probs / probs.sum()).tolist()):
                c["probability"] = p
    return lists
