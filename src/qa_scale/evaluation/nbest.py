"""N-best lists as arrays: each window's candidate spans, then each example's ranked list.

``window_candidates`` picks, per window, the best valid pairs among its top-k context starts ×
top-k context ends (the ``utils_qa`` grid, restricted to the context). ``rank`` keeps the best copy
of each (example, span) that overlapping windows found, ranks each example's spans and takes a
grouped softmax. The result, :class:`NBest`, is columnar: one array per field, one row per entry;
the per-entry dicts (with their texts) are made only when a consumer asks (``lists``, ``of``).

``rank_texts`` does the same for ``across_windows="sum_probability"``: it adds up the probabilities
of each (example, answer text) over windows and positions and ranks the texts.

Hand-written because no library builds n-best lists from span logits (``transformers`` ships only
the example loop of ``utils_qa.py``), and because a Python object per candidate is what made that
loop slow: here Python objects are made only for the entries that are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .span_texts import text_fingerprints

_FLOAT32_MIN = np.float32(np.finfo(np.float32).min)


def descending(score: np.ndarray) -> np.ndarray:
    """float32 scores → int64 keys in [0, 2³²) whose ascending order is the scores' descending order."""
    bits = (score.astype(np.float32, copy=False) + np.float32(0)).view(np.int32)  # −0.0 → +0.0
    # read unsigned, a negative float's bits already rise as it falls; a positive float's low 31 bits are
    # flipped, so that they fall as it rises and stay below every negative float's
    return (bits ^ (~(bits >> 31) & 0x7FFFFFFF)).view(np.uint32).astype(np.int64)


def _narrow(index: np.ndarray, size: int) -> np.ndarray:
    """int64 indices as int32 where they fit: NumPy's integer division is several times faster on them."""
    return index.astype(np.int32) if size < 1 << 31 else index


def _top_k_sorted(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's k largest finite entries: (positions [W, k] ascending, values [W, k]), and the
    row's k-th largest and largest values (no entry left out is above the k-th).

    The set is the one ``np.argpartition(x, L - k)[:, L - k:]`` picks, less its −inf entries: the
    entries at least the row's k-th largest value, which are exactly k unless that value is tied.
    A threshold and a mask cost less than ``argpartition`` (the k-th value comes from NumPy's SIMD
    row sort, cheaper than a partition of these 384-wide rows) and give the positions in order.
    Rows with a tie at the threshold (rare) take ``argpartition``'s own choice, so the set is always
    the one it gives. Rows with fewer than k finite entries (a context shorter than k tokens) are
    padded with position ``2 L`` (out of every start's reach) and value −inf. ``_top_k`` gives the
    same from less work; this serves the rows it does not settle.
    """
    W, L = x.shape
    k = min(k, L)
    ranked = np.sort(x, axis=1)
    kth = np.maximum(ranked[:, L - k], _FLOAT32_MIN)  # −inf (short context) → keep every finite
    mask = x >= kth[:, None]
    flat = _narrow(np.flatnonzero(mask), x.size)
    row = flat // L
    count = np.bincount(row, minlength=W)
    ties = np.flatnonzero(count > k)
    if len(ties):
        top = np.argpartition(x[ties], L - k, axis=1)[:, L - k:]
        mask[ties] = False
        mask[ties[:, None], top] = x[ties[:, None], top] > -np.inf
        flat = _narrow(np.flatnonzero(mask), x.size)
        row = flat // L
        count = np.bincount(row, minlength=W)
    small = np.int16 if 2 * L < 1 << 15 else np.int32  # small positions: cheaper k × k grids
    if len(flat) == W * k:  # every row holds k: no scatter needed
        pos = (flat - row * L).astype(small).reshape(W, k)
        return pos, x.ravel()[flat].reshape(W, k), ranked[:, L - k], ranked[:, L - 1]
    rank = np.arange(len(flat)) - np.repeat(np.cumsum(count) - count, count)
    pos = np.full((W, k), 2 * L, small)
    val = np.full((W, k), -np.inf, np.float32)
    pos[row, rank] = flat - row * L
    val[row, rank] = x.ravel()[flat]
    return pos, val, ranked[:, L - k], ranked[:, L - 1]


_GROUPS = 4  # a row's columns j, j + L/4, j + L/2, j + 3L/4 form group j


def _top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_top_k_sorted(x, k)``, from the maxima of column groups instead of a sort of whole rows.

    The k largest group maxima are k distinct entries, so the row's k-th largest value is at least
    the k-th largest group maximum, and every entry at least the row's k-th largest lies in one of
    those k groups. So the k-th value, the maximum and the entries at least the k-th come from the
    4 k entries of those groups: two sorts of narrow rows (L/4 maxima, then 4 k entries) instead of
    one of L entries, and a mask of 4 k entries instead of L. Laid out group member by member,
    group by group, the candidates' positions ascend, so the kept ones come out in position order.
    Rows that this does not settle (a tie at the k-th group maximum or at the k-th value, or fewer
    than k groups holding a finite entry, as in a context shorter than k tokens) go to
    ``_top_k_sorted``, which gives ``argpartition``'s pick there.
    """
    W, L = x.shape
    k = min(k, L)
    G = L // _GROUPS
    if L % _GROUPS or G <= k:
        return _top_k_sorted(x, k)
    z = np.maximum(x[:, :G], x[:, G:2 * G])
    for j in range(2, _GROUPS):
        np.maximum(z, x[:, j * G:(j + 1) * G], out=z)
    hit = z >= np.sort(z, axis=1)[:, G - k, None]
    fast = np.ones(W, bool)
    if np.count_nonzero(hit) > W * k:  # every row has at least k: a tie among group maxima, or a short context
        fast = np.count_nonzero(hit, axis=1) == k
        hit &= fast[:, None]
    rows = np.flatnonzero(fast)
    n = len(rows)
    # flat index in x of member j of each chosen group g, as [row, j, g]: row L + g + j G
    idx = (np.flatnonzero(hit).reshape(n, k) + (rows * (L - G))[:, None])[:, None, :]
    idx = idx + G * np.arange(_GROUPS)[:, None]
    val = x.ravel().take(idx.reshape(n, _GROUPS * k))
    ranked = np.sort(val, axis=1)
    top = val >= ranked[:, -k, None]
    if np.count_nonzero(top) > n * k:  # a tie at the k-th value
        ok = np.count_nonzero(top, axis=1) == k
        top &= ok[:, None]
        fast[rows[~ok]] = False
        rows, ranked = rows[ok], ranked[ok]
    flat = np.flatnonzero(top)
    small = np.int16 if 2 * L < 1 << 15 else np.int32
    pos = (idx.ravel().take(flat).reshape(len(rows), k) - (rows * L)[:, None]).astype(small)
    out = (val.ravel().take(flat).reshape(len(rows), k), ranked[:, -k], ranked[:, -1])
    if len(rows) == W:
        return (pos, *out)
    slow = np.flatnonzero(~fast)
    full = np.empty((W, k), small), np.empty((W, k), np.float32), np.empty(W, np.float32), np.empty(W, np.float32)
    for a, b, c in zip(full, (pos, *out), _top_k_sorted(x[slow], k)):
        a[rows], a[slow] = b, c
    return full


def window_candidates(s: np.ndarray, e: np.ndarray, k: int, m: int, max_len: int):
    """Each window's best valid pairs among its top-k context starts × top-k context ends.

    ``s``/``e`` are start/end logits with −inf outside the context. Returns (window, start token,
    end token, score) arrays, by window, then start, then end, and ``bound`` [W]: no valid pair
    outside the grid scores above it. Every valid pair (start ≤ end < start + ``max_len``) scoring
    at least the window's m-th best valid pair is kept (ties at that score all count, so the set
    does not depend on how a selection breaks ties).
    """
    W = s.shape[0]
    ps, vs, kth_s, max_s = _top_k(s, k)
    pe, ve, kth_e, max_e = _top_k(e, k)
    bound = np.maximum(kth_s + max_e, max_s + kth_e)  # a pair off the grid has its start or its end off it
    k = ps.shape[1]
    # end − start read unsigned: a negative gap wraps round to a large one, so one comparison checks both bounds
    gap = pe[:, None, :] - ps[:, :, None]
    unsigned = np.uint16 if gap.dtype == np.int16 else np.uint32
    flat = np.flatnonzero(gap.view(unsigned) < min(max_len, np.iinfo(gap.dtype).max + 1))  # valid pairs only
    # flat = (w k + start) k + end: floor division by a constant is several times faster than np.divmod
    flat = _narrow(flat, gap.size)
    a = flat // k  # w k + start: the start's row in vs
    w = a // k
    b = flat - (a - w) * k  # w k + end: the end's row in ve
    w = w.astype(np.int64)
    score = vs.ravel().take(a) + ve.ravel().take(b)  # take: faster than [] with int32 indices
    keep = score > -np.inf  # the padding of short rows
    per_window = np.bincount(w, minlength=W)
    crowded = np.flatnonzero(per_window > m)
    if len(crowded):  # more than m valid pairs: keep those at least the m-th best (one sort of packed keys)
        desc = descending(score)
        ranked = np.sort((w << 32) | desc)  # by window, then score, best first
        floor = np.full(W, 1 << 32, np.int64)
        floor[crowded] = ranked[(np.cumsum(per_window) - per_window)[crowded] + m - 1] & 0xFFFFFFFF
        keep &= desc <= floor[w]
    keep = np.flatnonzero(keep)
    return (w[keep], ps.ravel().take(a[keep]).astype(np.int64), pe.ravel().take(b[keep]).astype(np.int64),
            score[keep], bound)


def _sorted_groups(keys: Sequence[np.ndarray], runs: bool = False, groups: bool = True):
    """Sort rows by ``keys`` (non-negative integers, first key primary), ties by row index.

    Returns the order and, with ``groups``, the positions (in that order) where the keys change.
    When the keys' bit widths add up to at most 63 they are packed into one int64, several times
    faster to sort than ``np.lexsort``: with ``runs`` (rows mostly in order already) by NumPy's
    stable sort, a timsort that merges the runs; otherwise with the row index packed in as the
    last key, sorted as values by NumPy's SIMD quicksort (twice as fast as its ``argsort``; the
    packed keys are unique, so the order is deterministic) and read back from the low bits.
    """
    n = len(keys[0])
    widths = [max(int(k.max()).bit_length(), 1) if n else 1 for k in keys]
    if sum(widths) <= 63:
        packed = np.zeros(n, np.int64)
        for k, width in zip(keys, widths):
            packed <<= width
            packed |= k
        index_bits = max(n - 1, 1).bit_length()
        if runs or sum(widths) + index_bits > 63:
            order = np.argsort(packed, kind="stable")
            lead = packed[order] if groups else None
        else:
            ranked = np.sort((packed << index_bits) | np.arange(n))
            order, lead = ranked & ((1 << index_bits) - 1), (ranked >> index_bits if groups else None)
    else:
        order = np.lexsort(keys[::-1])
        lead = np.stack([k[order] for k in keys], 1) if groups else None
    if not groups:
        return order, None
    change = np.any(lead[1:] != lead[:-1], axis=tuple(range(1, lead.ndim)))
    return order, np.flatnonzero(np.r_[True, change]) if n else order


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of equal values."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _softmax_groups(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Softmax within each run ``x[starts[g]:starts[g + 1]]``.

    Runs of one length are stacked as rows: a row sum adds in the order a sum over that list
    alone does, so each probability is the one computed list by list, to the last bit.
    """
    sizes = np.diff(np.r_[starts, len(x)])
    out = np.empty_like(x)
    for size in np.unique(sizes).tolist():
        idx = starts[sizes == size][:, None] + np.arange(size)
        rows = x[idx]
        rows = np.exp(rows - rows.max(axis=1, keepdims=True))
        out[idx] = rows / rows.sum(axis=1, keepdims=True)
    return out


@dataclass
class NBest:
    """Every example's n-best list, one array per field, entries of example ``n`` at rows
    ``bounds[n]:bounds[n + 1]``, best first. ``window`` is −1 for an entry that the exact span
    search added (the top-k grid missed it). Texts are sliced from the contexts on demand."""

    ids: list[str]
    contexts: list[str]
    bounds: np.ndarray  # [E + 1]
    start: np.ndarray  # [N] character start
    end: np.ndarray  # [N] character end (exclusive)
    score: np.ndarray  # [N] float32 start + end logit
    window: np.ndarray  # [N]
    probability: np.ndarray  # [N] float64, softmax over each example's list

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, n: int) -> list[dict]:
        """Example ``n``'s list as dicts (text, start, score, window, probability)."""
        lo, hi = int(self.bounds[n]), int(self.bounds[n + 1])
        return self._entries(np.full(hi - lo, n), slice(lo, hi))

    def lists(self) -> dict[str, list[dict]]:
        """Every example's list as dicts, by id: the form the JSON files and the server give."""
        ex = np.repeat(np.arange(len(self.ids)), np.diff(self.bounds))
        entries = self._entries(ex, slice(None))
        bounds = self.bounds.tolist()
        return {x: entries[lo:hi] for x, lo, hi in zip(self.ids, bounds[:-1], bounds[1:])}

    def _entries(self, ex: np.ndarray, rows: slice) -> list[dict]:
        contexts = self.contexts
        return [{"text": contexts[x][p:q], "start": p, "score": v, "window": k, "probability": r}
                for x, p, q, v, k, r in zip(ex.tolist(), self.start[rows].tolist(), self.end[rows].tolist(),
                                            self.score[rows].tolist(), self.window[rows].tolist(),
                                            self.probability[rows].tolist())]


def rank(cand_ex: np.ndarray, char_s: np.ndarray, char_e: np.ndarray, cand_w: np.ndarray, cand_score: np.ndarray,
         best_score: np.ndarray, best_span: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Each example's n best distinct spans from the windows' candidates.

    Candidates (example, character start and end, window, score) come in window order;
    ``best_score``/``best_span`` are the exact search's best per example (it leads the list when the
    grid missed it). One packed sort keeps the best copy of each (example, span) that overlapping
    windows found (the first window among equals), one packed sort ranks each example's spans (ties
    in score by span start, then end), then a grouped softmax. Returns (example, start, end, score,
    window, probability) arrays, by example, best first; window −1 marks the exact search's span.
    """
    # Best copy of each (example, span): grouped by span, candidates in window order within it; the
    # copy with the lowest (descending score, position) key, i.e. the first window among equals.
    order, starts = _sorted_groups([cand_ex, char_s, char_e - char_s], runs=True)
    index_bits = max(len(order) - 1, 1).bit_length()
    best = np.minimum.reduceat((descending(cand_score[order]) << index_bits) | np.arange(len(order)), starts)
    keep = order[best & ((1 << index_bits) - 1)]

    # Each example's spans by score (ties: span order, i.e. the position in ``keep``).
    by_score, _ = _sorted_groups([cand_ex[keep], best >> index_bits], groups=False)
    keep = keep[by_score]
    ex = cand_ex[keep]
    first = group_starts(ex)
    rank_in = np.arange(len(ex)) - np.repeat(first, np.diff(np.r_[first, len(ex)]))
    leader = np.full(len(best_score), -np.inf, np.float32)
    leader[ex[first]] = cand_score[keep[first]]
    # The exact search found a better span than the top-k grid (or the grid found none): it leads.
    missed = (best_span[:, 0] >= 0) & (leader < best_score - 1e-6)
    keep = keep[rank_in < n - missed[ex]]
    ex, a, b, sc, w = cand_ex[keep], char_s[keep], char_e[keep], cand_score[keep], cand_w[keep]
    extra = np.flatnonzero(missed)
    at = np.searchsorted(ex, extra)
    ex, a, b = np.insert(ex, at, extra), np.insert(a, at, best_span[extra, 0]), np.insert(b, at, best_span[extra, 1])
    sc, w = np.insert(sc, at, best_score[extra]), np.insert(w, at, -1)
    return ex, a, b, sc, w, _softmax_groups(sc.astype(np.float64), group_starts(ex))


def _same_texts(ex: np.ndarray, a: np.ndarray, b: np.ndarray, weight: np.ndarray,
                contexts: Sequence[str]) -> np.ndarray:
    """For distinct spans (sorted by example, start, length), the index of the span standing for
    each one's text within its example: the span of that text with the highest ``weight`` (ties:
    the first). Texts are compared exactly.

    A fingerprint of each text (its length and four of its characters, sampled at fixed fractions of
    it) is equal for equal texts, so spans alone with their (example, fingerprint) have a text of
    their own; only spans that share one (the same text elsewhere, or a rare clash) are compared
    as strings.
    """
    n = len(ex)
    rep = np.arange(n)
    if n < 2:
        return rep
    order, starts = _sorted_groups([ex, text_fingerprints(ex, a, b, contexts)])
    sizes = np.diff(np.r_[starts, n])
    shared = np.flatnonzero(sizes > 1)
    if not len(shared):
        return rep
    members = order[np.repeat(sizes > 1, sizes)]  # the spans of those groups, group by group
    texts = [contexts[x][p:q] for x, p, q in zip(ex[members].tolist(), a[members].tolist(), b[members].tolist())]
    span, w = members.tolist(), weight[members].tolist()
    lo = 0
    for size in sizes[shared].tolist():
        chosen: dict[str, int] = {}  # text → its member of highest weight (ties: the first, by start, then length)
        for m in range(lo, lo + size):
            r = chosen.setdefault(texts[m], m)
            if w[m] > w[r]:
                chosen[texts[m]] = m
        for m in range(lo, lo + size):
            rep[span[m]] = span[chosen[texts[m]]]
        lo += size
    return rep


def rank_texts(cand_ex: np.ndarray, char_s: np.ndarray, char_e: np.ndarray, cand_w: np.ndarray, logp: np.ndarray,
               contexts: Sequence[str], n: int) -> tuple[np.ndarray, ...]:
    """Each example's n most probable answer texts, probabilities added up over windows and positions.

    Candidates (example, character start and end, window, log p_start + log p_end) come in window
    order. The probabilities of one (example, span) are added up over the windows that found it,
    then those of one (example, text) over the spans of that text (see :func:`_same_texts`, which
    also picks the span that stands for the text). Texts are ranked by summed probability (compared
    as float32 logarithms; ties: by span start, then end) and the first ``n`` of each example kept.
    Returns (example, start, end, score, window, probability) arrays, by example, best first: score
    the log of the summed probability (float32), window the window that gave the span its highest
    probability (the first among equals), probability the sums normalised over the kept list.
    """
    N = len(cand_ex)
    if not N:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                np.zeros(0, np.int64), np.zeros(0, np.float64))
    # One row per (example, span), its copies in window order (a stable sort: the candidates come so).
    order, starts = _sorted_groups([cand_ex, char_s, char_e - char_s], runs=True)
    ex_o, lp = cand_ex[order], logp[order]
    ex_first = group_starts(ex_o)
    # Probabilities relative to each example's most probable candidate: sums never underflow to 0.
    shift = np.maximum.reduceat(lp, ex_first)
    p = np.exp(lp - np.repeat(shift, np.diff(np.r_[ex_first, N])))
    span_p = np.add.reduceat(p, starts)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, N]))
    hit = np.flatnonzero(p == np.maximum.reduceat(p, starts)[group])
    span_w = cand_w[order[hit[group_starts(group[hit])]]]
    first = order[starts]
    ex, a, b = cand_ex[first], char_s[first], char_e[first]
    shift_of = np.zeros(int(ex.max()) + 1)
    shift_of[ex_o[ex_first]] = shift
    # One row per (example, text): its span, the summed probability.
    rep = _same_texts(ex, a, b, span_p, contexts)
    text_p = np.bincount(rep, weights=span_p, minlength=len(rep))
    keep = np.flatnonzero(rep == np.arange(len(rep)))
    ex, a, b, w, text_p = ex[keep], a[keep], b[keep], span_w[keep], text_p[keep]
    with np.errstate(divide="ignore"):
        log_p = np.log(text_p)
    # Each example's texts by summed probability (ties: span order), the first n.
    by_p, _ = _sorted_groups([ex, descending(log_p.astype(np.float32))], groups=False)
    ex, a, b, w, text_p, log_p = ex[by_p], a[by_p], b[by_p], w[by_p], text_p[by_p], log_p[by_p]
    firsts = group_starts(ex)
    sizes = np.diff(np.r_[firsts, len(ex)])
    kept = np.flatnonzero(np.arange(len(ex)) - np.repeat(firsts, sizes) < n)
    ex, a, b, w, text_p, log_p = ex[kept], a[kept], b[kept], w[kept], text_p[kept], log_p[kept]
    firsts = group_starts(ex)
    sizes = np.diff(np.r_[firsts, len(ex)])
    prob = text_p / np.repeat(np.add.reduceat(text_p, firsts), sizes)
    return ex, a, b, (log_p + shift_of[ex]).astype(np.float32), w, prob
