"""The n-best decoder shared by single models and ensembles: window logits → answers.

Every window of a data set is decoded at once with array operations. The answer is the
*exact* best valid span (context tokens, start ≤ end, at most ``max_answer_len`` tokens) by
start logit + end logit over all of an example's windows: for every start, the best end
within reach is a sliding-window maximum of the end logits, so no span is missed (a top-k
search, as in ``utils_qa``, can miss the best valid span when its top positions are invalid).
N-best lists, when asked for, come from the top ``n_best_size`` context starts × ends of each
window, like ``utils_qa`` but restricted to the context first, one entry per distinct span; they
are built with array operations too (packed-key sorts, grouped softmax), and Python objects are
made only for the entries that are returned.
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
    k = min(config.n_best_size, L)

    def per_window(b: slice):
        spans = best_spans(s[b], e[b], config.max_answer_len)
        if not nbest:
            return spans, None
        w, i, j, score = _window_candidates(s[b], e[b], k, config.n_best_size, config.max_answer_len)
        return spans, (w + b.start, i, j, score)

    blocks = [slice(a, min(a + _BLOCK, W)) for a in range(0, W, _BLOCK)]
    parts = list(_pool().map(per_window, blocks))
    score, i, j = (np.concatenate([p[0][n] for p in parts]) for n in range(3))

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
        candidates = [np.concatenate([p[1][n] for p in parts]) for n in range(4)]
        out.nbest = _nbest(windows, candidates, offsets, examples, config, out)
    return out


def _sorted_groups(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows by ``keys`` (non-negative integers, first key primary, last key unique).

    Returns the order and the positions (in that order) where the leading keys, all but the
    last, change. When the keys' bit widths add up to at most 63 they are packed into one int64
    and sorted once with NumPy's SIMD quicksort, several times faster than ``np.lexsort``; the
    last key is unique (a row index), so the unstable sort is still deterministic.
    """
    widths = [max(int(k.max()).bit_length(), 1) if len(k) else 1 for k in keys]
    if sum(widths) <= 63:
        packed = np.zeros(len(keys[0]), np.int64)
        for k, width in zip(keys, widths):
            packed <<= width
            packed |= k
        order = np.argsort(packed)
        lead = packed[order] >> widths[-1]
    else:
        order = np.lexsort(keys[::-1])
        lead = np.stack([k[order] for k in keys[:-1]], 1)
    change = np.any(lead[1:] != lead[:-1], axis=tuple(range(1, lead.ndim)))
    return order, np.flatnonzero(np.r_[True, change]) if len(order) else order


def _descending(score: np.ndarray) -> np.ndarray:
    """float32 scores → int64 keys whose ascending order is the scores' descending order."""
    bits = (score.astype(np.float32) + np.float32(0)).view(np.uint32).astype(np.int64)  # −0.0 → +0.0
    ascending = np.where(bits >= 1 << 31, (~bits) & 0xFFFFFFFF, bits | (1 << 31))
    return 0xFFFFFFFF - ascending


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of equal values."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _reduceat(ufunc: np.ufunc, x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``ufunc.reduceat`` that also takes no groups at all."""
    return ufunc.reduceat(x, starts) if len(starts) else x[:0]


def _softmax_groups(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Softmax within each run ``x[starts[g]:starts[g + 1]]``.

    Runs of one length are stacked as rows: a row sum adds in the order a sum over that list
    alone does, so each probability is the one computed list by list, to the last bit.
    """
    sizes = np.diff(np.r_[starts, len(x)])
    out = np.empty_like(x)
    for size in np.unique(sizes).tolist():
        idx = starts[sizes == size][:, None] + np.arange(size)
        rows = np.exp(x[idx] - x[idx].max(axis=1, keepdims=True))
        out[idx] = rows / rows.sum(axis=1, keepdims=True)
    return out


def _window_candidates(s: np.ndarray, e: np.ndarray, k: int, m: int, max_len: int):
    """Each window's best valid pairs among its top-k context starts × top-k context ends.

    Returns (window, start token, end token, score) arrays. Every pair scoring at least the
    window's m-th best valid pair is kept (ties at that score all count, so the set does not
    depend on how a selection breaks ties).
    """
    W = s.shape[0]
    top_s, top_e = _top_k(s, k), _top_k(e, k)
    score = np.take_along_axis(s, top_s, 1)[:, :, None] + np.take_along_axis(e, top_e, 1)[:, None, :]
    # end − start as uint16: a negative gap wraps round to a large one, so one comparison checks both bounds
    gap = top_e.astype(np.uint16)[:, None, :] - top_s.astype(np.uint16)[:, :, None]
    np.putmask(score, gap >= max_len, -np.inf)
    score = score.reshape(W, k * k)
    m = min(m, k * k)
    floor = np.sort(score, axis=1)[:, k * k - m]  # the m-th best pair of each window
    flat = np.flatnonzero((score >= floor[:, None]) & (score > -np.inf))
    w, pair = np.divmod(flat, k * k)
    return w, top_s[w, pair // k], top_e[w, pair % k], score.ravel()[flat]


def _nbest(windows: WindowSet, candidates: Sequence[np.ndarray], offsets: np.ndarray,
           examples: Sequence[Example], config: DecodeConfig, decoded: Decoded) -> dict[str, list[dict]]:
    """N-best lists from each window's top context starts × ends, one entry per distinct span.

    Array operations throughout: candidates of every window at once, one packed sort to keep the
    best copy of each (example, span) that overlapping windows found, one packed sort to rank
    each example's spans, grouped softmax; Python objects are made only for the final entries.
    Ties in score rank by span start, then end.
    """
    n = config.n_best_size
    cand_w, i, j, cand_score = candidates
    cand_ex = windows.example_index[cand_w].astype(np.int64)
    char_s = offsets[cand_w, i, 0].astype(np.int64)
    char_e = offsets[cand_w, j, 1].astype(np.int64)

    # Best copy of each (example, span): grouped by span, candidates in window order within it.
    order, starts = _sorted_groups([cand_ex, char_s, char_e - char_s, np.arange(len(cand_w))])
    scores = cand_score[order]
    sizes = np.diff(np.r_[starts, len(order)])
    at_top = np.flatnonzero(scores == np.repeat(_reduceat(np.maximum, scores, starts), sizes))
    group = np.repeat(np.arange(len(starts)), sizes)[at_top]
    keep = order[at_top[np.r_[True, group[1:] != group[:-1]]]] if len(at_top) else order

    # Each example's spans by score (ties: span order, i.e. the position in ``keep``).
    by_score, _ = _sorted_groups([cand_ex[keep], _descending(cand_score[keep]), np.arange(len(keep))])
    keep = keep[by_score]
    ex = cand_ex[keep]
    first = _group_starts(ex)
    rank = np.arange(len(ex)) - np.repeat(first, np.diff(np.r_[first, len(ex)]))
    leader = np.full(len(examples), -np.inf, np.float32)
    leader[ex[first]] = cand_score[keep[first]]
    # The exact search found a better span than the top-k grid (or the grid found none): it leads.
    missed = (decoded.best_span[:, 0] >= 0) & (leader < decoded.best_score - 1e-6)
    keep = keep[rank < n - missed[ex]]
    ex, a, b, sc, w = cand_ex[keep], char_s[keep], char_e[keep], cand_score[keep], cand_w[keep]
    extra = np.flatnonzero(missed)
    at = np.searchsorted(ex, extra)
    ex, a, b = np.insert(ex, at, extra), np.insert(a, at, decoded.best_span[extra, 0]), np.insert(b, at, decoded.best_span[extra, 1])
    sc, w = np.insert(sc, at, decoded.best_score[extra]), np.insert(w, at, -1)

    prob = _softmax_groups(sc.astype(np.float64), _group_starts(ex))

    contexts = [x.context for x in examples]
    entries = [{"text": contexts[x][p:q], "start": p, "score": v, "window": k, "probability": r}
               for x, p, q, v, k, r in zip(ex.tolist(), a.tolist(), b.tolist(), sc.tolist(), w.tolist(), prob.tolist())]
    bounds = np.searchsorted(ex, np.arange(len(examples) + 1)).tolist()
    return {x.id: entries[lo:hi] for x, lo, hi in zip(examples, bounds[:-1], bounds[1:])}
