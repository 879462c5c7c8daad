"""The n-best decoder shared by single models and ensembles: window logits → answers.

Every window of a data set is decoded at once with array operations. The answer is the
*exact* best valid span (context tokens, start ≤ end, at most ``max_answer_len`` tokens) by
start logit + end logit over all of an example's windows: for every start, the best end
within reach is a sliding-window maximum of the end logits, so no span is missed (a top-k
search, as in ``utils_qa``, can miss the best valid span when its top positions are invalid).
N-best lists, when asked for, come from the top ``n_best_size`` context starts × ends of each
window, like ``utils_qa`` but restricted to the context first, one entry per distinct span; they
are built with array operations too (module ``nbest``) and kept as arrays: the per-entry dicts are
made only when ``Decoded.nbest`` is first read.
Answer text is sliced from the original context through the offset mapping, never produced
by ``tokenizer.decode`` (which drops spaces and turns rare characters into ``[UNK]``).

That is ``DecodeConfig.across_windows="max_score"`` (the default). ``"sum_probability"`` combines an
example's windows as the Hugging Face question-answering pipeline does (transformers 4.x
``QuestionAnsweringPipeline.postprocess``), with array operations:

* per window, log-softmax of the start logits and of the end logits over the window's context
  tokens *and its CLS token* (the pipeline's ``p_mask`` leaves CLS in the softmax too): a window
  that points at CLS, i.e. says "the answer is not here", gives its spans little probability;
* candidates per window: the valid pairs among its top ``n_best_size`` context starts × top
  ``n_best_size`` context ends that score at least its ``n_best_size``-th best such pair (ties all
  kept), plus the window's exact best valid span when that grid misses it. Within a window the
  order of p_start·p_end is the order of start + end logit, so wherever the grid's
  ``n_best_size``-th pair beats what any pair off the grid can reach (``window_candidates``'s
  bound), the candidates are exactly the window's ``n_best_size`` most probable valid spans; the
  pipeline takes the top ``2 top_k + 10`` pairs of its full ``L × L`` product;
* each candidate's probability p_start·p_end; the probabilities of identical answer texts
  (``context[start:end]``, compared exactly; the pipeline compares them lower-cased) are added up
  over all of the example's windows and positions: a span found by two overlapping windows counts
  once per window, and the same text at two places of the context counts at both;
* the answer is the text of highest summed probability (compared as float32 logarithms; ties: the
  text whose span starts first). Its span (``best_span``, and ``start`` of its n-best entry) is the
  position of that text with the highest probability summed over the windows that found it there
  (ties: the first position); the pipeline reports the first position it met;
* ``best_score`` is the logarithm of the text's summed probability, ``null_score`` the lowest
  log p_start(CLS) + log p_end(CLS) over the example's windows (the pipeline's ``min_null_score``,
  as a logarithm): ``null_threshold`` compares the two as before, so 0 predicts the empty answer
  where the null probability exceeds the answer's (the pipeline's ``handle_impossible_answer``);
* n-best lists: one entry per text, by summed probability, ``score`` its logarithm, ``window``
  the window that gave its span the highest probability, ``probability`` the sums normalised
  over the list.

Hand-written because no library decodes span logits: ``transformers`` ships this only as
example code (``utils_qa.py``) that loops in Python over windows and candidate pairs.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ..common.settings import check_fields, option
from ..data import Example
from ..data.windows import WindowSet
from .nbest import NBest, descending, group_starts, rank, rank_texts, window_candidates

# Opening mark → closing mark, for the optional clean-up of unbalanced marks at span edges.
PAIRED_MARKS = {"「": "」", "《": "》", "“": "”", "（": "）", "『": "』", "(": ")"}
_CLOSING = {v: k for k, v in PAIRED_MARKS.items()}


@dataclass(frozen=True)
class DecodeConfig:
    """How spans are chosen."""

    n_best_size: int = option(20, "start and end candidates per window, and length of each n-best list", ge=1)
    max_answer_len: int = option(30, "longest answer, in tokens", ge=1)
    null_threshold: float | None = option(
        None, "predict the empty answer when null score minus best span score exceeds this (with "
              "--across-windows sum_probability: log probabilities, 0 = the more probable wins); default: never")
    balance_marks: bool = option(
        False, "repair unbalanced 「」《》“”（）『』 at the edges of the chosen span")
    across_windows: Literal["max_score", "sum_probability"] = option(
        "max_score", "how an example's windows are combined. max_score: the valid span of highest start + end "
                     "logit over all of them (exact). sum_probability: as the Hugging Face question-answering "
                     "pipeline, per window softmax of the start and of the end logits over the context and CLS "
                     "tokens, candidates from the top n_best_size starts x ends (and the window's best span), "
                     "probabilities p_start*p_end of identical answer texts added up over the windows; the "
                     "answer is the most probable text, scores are log probabilities (null_threshold too)")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class Decoded:
    """Answers of every example, with n-best lists when they were asked for."""

    predictions: dict[str, str]
    # [E] best span score (-inf where no valid span exists); sum_probability: log of the answer's summed probability
    best_score: np.ndarray
    best_span: np.ndarray  # [E, 2] character [start, end) of the best span (-1 where none)
    # [E] lowest CLS start+end score over the example's windows; sum_probability: lowest log p_start·p_end of CLS
    null_score: np.ndarray
    nbest_lists: NBest | None = None  # the n-best lists as arrays

    @functools.cached_property
    def nbest(self) -> dict[str, list[dict]] | None:
        """The n-best lists as dicts by example id (text, start, score, window, probability), made on
        first reading: most callers want only the answers, and the dicts cost more than the arrays."""
        return None if self.nbest_lists is None else self.nbest_lists.lists()

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


_BLOCK = 1024  # about this many windows per block of whole examples
_WORKERS = min(4, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_WORKERS)


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
    width = min(max_answer_len, start.shape[1])
    reach = _band_max(end, width)  # best end logit within reach of each start
    return _best_end(start, end, np.arange(start.shape[0]), np.argmax(start + reach, axis=1), width)


def _best_end(start: np.ndarray, end: np.ndarray, rows: np.ndarray, i: np.ndarray, width: int):
    """(score, i, j) of the span of each row of ``rows`` from start ``i`` to its first best end in reach."""
    L = start.shape[1]
    reach = i[:, None] + np.arange(width)[None, :]
    # one flat take: several times faster than indexing with a pair of index arrays
    cand = np.where(reach < L, end.ravel().take(rows[:, None] * L + np.minimum(reach, L - 1)), -np.inf)
    j = i + np.argmax(cand, axis=1)
    return start[rows, i] + end[rows, j], i, j


def _spans_from_grid(s: np.ndarray, e: np.ndarray, grid, max_answer_len: int):
    """``best_spans(s, e, max_answer_len)``, taking the start from the n-best grid where that is proven.

    Where a window's best grid pair scores strictly above ``bound`` (what any pair off the grid can
    reach), the exact best span is on the grid, and so is every pair with that score: the first
    start that ``best_spans`` finds is the lowest start among the grid pairs at the best score (the
    grid lists pairs by start), and its end is found the same way. Other windows (no grid pair, or
    not proven) go through ``best_spans``. This saves the sliding-window maximum on most windows.
    """
    w, i, score, bound = grid[0], grid[1], grid[3], grid[4]
    W = s.shape[0]
    top = np.full(W, -np.inf, np.float32)
    firsts = group_starts(w)
    top[w[firsts]] = np.maximum.reduceat(score, firsts) if len(firsts) else top[:0]
    at_top = np.flatnonzero(score == top[w])
    at_top = at_top[group_starts(w[at_top])]  # first pair at the best score of each window
    start_of = np.zeros(W, np.int64)
    start_of[w[at_top]] = i[at_top]
    proven = top > bound
    out = [np.empty(W, np.float32), np.empty(W, np.int64), np.empty(W, np.int64)]
    rows = np.flatnonzero(proven)
    for x, y in zip(out, _best_end(s, e, rows, start_of[rows], min(max_answer_len, s.shape[1]))):
        x[rows] = y
    rows = np.flatnonzero(~proven)
    if len(rows):
        for x, y in zip(out, best_spans(s[rows], e[rows], max_answer_len)):
            x[rows] = y
    return tuple(out)


def _log_normaliser(x: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """float64 [W]: log of the sum of exp over each row's finite entries of ``x`` and its ``extra`` (CLS) logit.

    Exponentials in float32 (NumPy's SIMD ``exp``) of values shifted by the row's maximum, added up in float64.
    """
    m = np.maximum(x.max(axis=1), extra)
    m = np.where(np.isfinite(m), m, np.float32(0))  # nothing finite: −inf below, never NaN
    with np.errstate(divide="ignore"):
        total = np.exp(x - m[:, None]).sum(axis=1, dtype=np.float64) + np.exp(extra.astype(np.float64) - m)
        return m + np.log(total)


def decode(windows: WindowSet, start_logits: np.ndarray, end_logits: np.ndarray,
           examples: Sequence[Example], config: DecodeConfig = DecodeConfig(), nbest: bool = False) -> Decoded:
    """Choose each example's answer from its windows' start/end logits.

    Args:
        windows: the window set the logits were computed on.
        start_logits: [W, L'] logits, L' ≤ max_seq_len (extra padding columns are ignored).
        end_logits: [W, L'].
        examples: the examples of ``windows``, in the same order (their contexts are sliced).
        config: decoding settings.
        nbest: also build n-best lists (spans, scores, probabilities; as arrays, ``Decoded.nbest``
            makes the dicts with their texts when first read).

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
    in_ctx = windows.context_mask[:, :L]
    n_ex, ex_of = len(examples), windows.example_index
    # Blocks of whole examples in threads: NumPy releases the GIL on these array operations, and a block
    # decodes its examples, n-best lists included, from its own windows. Several blocks come in a
    # multiple of the threads, of equal size, so that the threads finish together.
    if np.all(ex_of[1:] >= ex_of[:-1]):
        blocks = 1 if W <= _BLOCK else _WORKERS * max(1, round(W / (_WORKERS * _BLOCK)))
        firsts = group_starts(ex_of)  # a block starts where the example holding its first window starts
        cuts = np.searchsorted(firsts, np.arange(blocks) * W // blocks, side="right") - 1
        cuts = np.unique(np.r_[firsts[cuts], W])
    else:  # windows out of example order: one block
        cuts = np.array([0, W])
    lows = np.r_[0, ex_of[cuts[1:-1]], n_ex].tolist()  # block q holds examples lows[q]:lows[q + 1]
    cuts = cuts.tolist()
    flat = windows.offsets.reshape(-1)  # character offsets, offsets[w, t] at 2 (w max_seq_len + t)

    def answers(lo: int, hi: int, best_score: np.ndarray, best_span: np.ndarray, null_score: np.ndarray):
        """The answers' texts of examples lo:hi (Python objects, but made while the other threads' NumPy calls run)."""
        empty = best_span[:, 0] < 0
        if config.null_threshold is not None:
            empty |= null_score - best_score > config.null_threshold
        # [0, 0): the empty answer; two flat lists, not a small list per span (the garbage collector tracks those)
        spans = zip(examples[lo:hi], *np.where(empty[:, None], 0, best_span).T.tolist())
        if config.balance_marks:
            spans = [(x, a, b) if a == b else (x, *balance_span(x.context, a, b)) for x, a, b in spans]
        return {x.id: x.context[a:b] for x, a, b in spans}

    def summed(rows: slice, lo: int, hi: int, s: np.ndarray, e: np.ndarray):
        """``across_windows="sum_probability"`` on one block (see the module docstring)."""
        n_w, k = s.shape[0], config.n_best_size
        grid = window_candidates(s, e, k, k, config.max_answer_len)
        w, i, j, score = grid[:4]
        best, bi, bj = _spans_from_grid(s, e, grid, config.max_answer_len)
        top = np.full(n_w, -np.inf, np.float32)  # each window's best grid pair
        firsts = group_starts(w)
        if len(firsts):
            top[w[firsts]] = np.maximum.reduceat(score, firsts)
        missed = np.flatnonzero(np.isfinite(best) & (top < best))  # the window's best span is off its grid
        at = np.searchsorted(w, missed)  # inserted in window order: ties go to the first window
        w, i, j = np.insert(w, at, missed), np.insert(i, at, bi[missed]), np.insert(j, at, bj[missed])
        # log-softmax over the context and CLS, per window; each candidate's log p_start + log p_end (float64)
        cls = windows.cls_index[rows]
        cls_s = start_logits[rows][np.arange(n_w), cls]
        cls_e = end_logits[rows][np.arange(n_w), cls]
        norm_s, norm_e = _log_normaliser(s, cls_s), _log_normaliser(e, cls_e)
        logp = ((s.ravel().take(w * L + i) - norm_s[w]) + (e.ravel().take(w * L + j) - norm_e[w]))
        ex = ex_of[rows] - lo
        null_score = np.full(hi - lo, np.inf, np.float32)
        np.minimum.at(null_score, ex, ((cls_s - norm_s) + (cls_e - norm_e)).astype(np.float32))
        w = w + rows.start
        at = 2 * w * windows.offsets.shape[1]
        ranked = rank_texts(ex_of[w] - lo, flat.take(at + 2 * i), flat.take(at + 2 * j + 1), w, logp,
                            [x.context for x in examples[lo:hi]], config.n_best_size)
        firsts = group_starts(ranked[0])
        best_score = np.full(hi - lo, -np.inf, np.float32)
        best_span = np.full((hi - lo, 2), -1, np.int64)
        top_ex = ranked[0][firsts]
        best_score[top_ex] = ranked[3][firsts]
        best_span[top_ex, 0], best_span[top_ex, 1] = ranked[1][firsts], ranked[2][firsts]
        predictions = answers(lo, hi, best_score, best_span, null_score)
        return predictions, best_score, best_span, null_score, ((ranked[0] + lo, *ranked[1:]) if nbest else None)

    def per_block(q: int):
        rows, lo, hi = slice(cuts[q], cuts[q + 1]), lows[q], lows[q + 1]
        s = np.where(in_ctx[rows], start_logits[rows], -np.inf)
        e = np.where(in_ctx[rows], end_logits[rows], -np.inf)
        if config.across_windows == "sum_probability":
            return summed(rows, lo, hi, s, e)
        if nbest:
            grid = window_candidates(s, e, config.n_best_size, config.n_best_size, config.max_answer_len)
            score, i, j = _spans_from_grid(s, e, grid, config.max_answer_len)
        else:
            score, i, j = best_spans(s, e, config.max_answer_len)
        ex = ex_of[rows] - lo
        # per example, its best window first (ties: the first window); a stable sort of packed keys
        order = np.argsort((ex.astype(np.int64) << 32) | descending(score), kind="stable")
        firsts = group_starts(ex[order])
        found = order[firsts[np.isfinite(score[order[firsts]])]]
        best_score = np.full(hi - lo, -np.inf, np.float32)
        best_span = np.full((hi - lo, 2), -1, np.int64)
        best_score[ex[found]] = score[found]
        at = 2 * (found + rows.start) * windows.offsets.shape[1]
        best_span[ex[found]] = np.stack([flat.take(at + 2 * i[found]), flat.take(at + 2 * j[found] + 1)], 1)
        cls = windows.cls_index[rows][order]
        null = start_logits[rows][order, cls] + end_logits[rows][order, cls]  # each window's CLS score, by example
        null_score = np.full(hi - lo, np.inf, np.float32)
        null_score[ex[order[firsts]]] = np.minimum.reduceat(null, firsts) if len(firsts) else null  # the lowest
        predictions = answers(lo, hi, best_score, best_span, null_score)
        if not nbest:
            return predictions, best_score, best_span, null_score, None
        w, i, j, score = grid[:4]
        w = w + rows.start
        at = 2 * w * windows.offsets.shape[1]
        ranked = rank(ex_of[w] - lo, flat.take(at + 2 * i), flat.take(at + 2 * j + 1), w, score,
                      best_score, best_span, config.n_best_size)
        return predictions, best_score, best_span, null_score, (ranked[0] + lo, *ranked[1:])

    parts = list(_pool().map(per_block, range(len(cuts) - 1)))
    predictions = {}
    for p in parts:
        predictions.update(p[0])
    out = Decoded(predictions, *(np.concatenate([p[f] for p in parts]) for f in (1, 2, 3)))
    if nbest:
        # the six columns joined in the threads: writing fresh memory (page faults) costs more than the copy
        ex, start, end, score, window, prob = _pool().map(lambda f: np.concatenate([p[4][f] for p in parts]), range(6))
        out.nbest_lists = NBest([x.id for x in examples], [x.context for x in examples],
                                np.searchsorted(ex, np.arange(n_ex + 1)), start, end, score, window, prob)
    return out
