"""The vectorised n-best lists equal, entry for entry and to the last bit, those of the loop they
replaced (kept here as the reference: one Python dict per candidate, one softmax per list)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORPUS

from qa_scale.data import Example
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.evaluation.decode import DecodeConfig, decode
from qa_scale.evaluation.nbest import _top_k, rank_texts


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    if k >= x.shape[1]:
        return np.broadcast_to(np.arange(x.shape[1]), x.shape).copy()
    return np.argpartition(x, x.shape[1] - k, axis=1)[:, x.shape[1] - k:]


def loop_nbest(ws, start, end, examples, config, decoded, keep_ties=False):
    """The n-best construction before vectorisation (qa-scale 0.1.0), verbatim in substance.

    ``keep_ties``: keep every pair scoring the window's m-th best score, not the m that
    ``argpartition`` happens to pick among ties (the decoder's documented rule; the loop had no
    tie rule, so on tied logits it is compared in this form)."""
    L = start.shape[1]
    offsets, in_ctx = ws.offsets[:, :L], ws.context_mask[:, :L]
    s, e = np.where(in_ctx, start, -np.inf), np.where(in_ctx, end, -np.inf)
    W = s.shape[0]
    k = min(config.n_best_size, L)
    top_s, top_e = top_k(s, k), top_k(e, k)
    S, E = top_s[:, :, None], top_e[:, None, :]
    score = np.take_along_axis(s, top_s, 1)[:, :, None] + np.take_along_axis(e, top_e, 1)[:, None, :]
    ok = (E >= S) & (E - S < config.max_answer_len)
    score = np.where(ok, score, -np.inf).reshape(W, k * k)
    m = min(config.n_best_size, k * k)
    if keep_ties:
        cand_w, pick = np.nonzero(score >= np.sort(score, axis=1)[:, k * k - m : k * k - m + 1])
        cand_score = score[cand_w, pick]
        cand_s = np.broadcast_to(S, (W, k, k)).reshape(W, -1)[cand_w, pick]
        cand_e = np.broadcast_to(E, (W, k, k)).reshape(W, -1)[cand_w, pick]
    else:
        pick = top_k(score, m)
        cand_score = np.take_along_axis(score, pick, 1).ravel()
        cand_w = np.repeat(np.arange(W), m)
        cand_s = np.take_along_axis(np.broadcast_to(S, (W, k, k)).reshape(W, -1), pick, 1).ravel()
        cand_e = np.take_along_axis(np.broadcast_to(E, (W, k, k)).reshape(W, -1), pick, 1).ravel()
    keep = np.isfinite(cand_score)
    cand_score, cand_w, cand_s, cand_e = cand_score[keep], cand_w[keep], cand_s[keep], cand_e[keep]
    cand_ex = ws.example_index[cand_w]
    char_s, char_e = offsets[cand_w, cand_s, 0], offsets[cand_w, cand_e, 1]
    order = np.lexsort((-cand_score, char_e, char_s, cand_ex))
    key = np.stack([cand_ex[order], char_s[order], char_e[order]], 1)
    order = order[np.r_[True, np.any(key[1:] != key[:-1], axis=1)]]
    order = order[np.lexsort((-cand_score[order], cand_ex[order]))]
    ex_sorted = cand_ex[order]
    rank = np.arange(len(order)) - np.searchsorted(ex_sorted, ex_sorted, side="left")
    order = order[rank < config.n_best_size]
    lists = {ex.id: [] for ex in examples}
    for n, a, b, sc, w in zip(cand_ex[order].tolist(), char_s[order].tolist(), char_e[order].tolist(),
                              cand_score[order].tolist(), cand_w[order].tolist()):
        lists[examples[n].id].append({"text": examples[n].context[a:b], "start": a, "score": sc, "window": w})
    for n, ex in enumerate(examples):
        cands, best = lists[ex.id], decoded.best_span[n]
        if best[0] >= 0 and (not cands or cands[0]["score"] < decoded.best_score[n] - 1e-6):
            cands.insert(0, {"text": ex.context[best[0]:best[1]], "start": int(best[0]),
                             "score": float(decoded.best_score[n]), "window": -1})
            del cands[config.n_best_size:]
        if cands:
            scores = np.array([c["score"] for c in cands], np.float64)
            probs = np.exp(scores - scores.max())
            for c, p in zip(cands, (probs / probs.sum()).tolist()):
                c["probability"] = p
    return lists


@pytest.mark.parametrize("seed,n_best,max_len,outside,step", [
    (0, 20, 30, 0.0, 0), (1, 5, 4, 0.0, 0), (2, 1, 30, 0.0, 0), (3, 7, 2, 4.0, 0), (4, 64, 10, 0.0, 0),
    (5, 3, 30, 4.0, 0), (6, 5, 6, 0.0, 0.5), (7, 3, 30, 2.0, 1.0), (8, 20, 30, 0.0, 0.25)])
def test_vectorised_lists_equal_the_loop(char_tokenizer, seed, n_best, max_len, outside, step):
    rng = np.random.default_rng(seed)
    exs = [Example(f"e{i}", "问题？" * (1 + i % 3), "".join(rng.permutation(CORPUS)[: 2 + i % 3])) for i in range(12)]
    ws = build_windows(exs, char_tokenizer, WindowConfig(max_seq_len=40, max_question_len=8, doc_overlap=10),
                       labels=False)
    start, end = rng.normal(size=(2, *ws.input_ids.shape)).astype(np.float32)
    start[ws.offsets[:, :, 0] < 0] += outside  # attractive non-context tokens: the grid misses the exact best
    if step:  # coarse logits: ties at every rank, the k-th largest included (argpartition's pick must hold)
        start, end = np.round(start / step) * step, np.round(end / step) * step
    config = DecodeConfig(n_best_size=n_best, max_answer_len=max_len)
    out = decode(ws, start, end, exs, config, nbest=True)
    want = loop_nbest(ws, start, end, exs, config, out, keep_ties=bool(step))
    assert out.nbest == want  # texts, starts, scores, windows and probabilities, to the last bit
    assert all(len(v) == min(n_best, len(v)) for v in out.nbest.values())
    assert [out.nbest_lists.of(n) for n in range(len(exs))] == list(want.values())
    # the answers of an n-best run (taken from the grid where it provably holds them) are the exact search's
    plain = decode(ws, start, end, exs, config)
    assert plain.predictions == out.predictions
    assert np.array_equal(plain.best_score, out.best_score) and np.array_equal(plain.best_span, out.best_span)


def test_lists_where_the_exact_search_leads(char_tokenizer):
    """A window whose top-1 start and end are too far apart: the grid of 1 × 1 has no valid pair.

    (The loop above failed here: with no grid candidate at all its de-duplication indexed an
    empty array with a one-element mask.)
    """
    ex = Example("a", "问题？", CORPUS[1])
    ws = build_windows([ex], char_tokenizer, WindowConfig(max_seq_len=64, max_question_len=8, doc_overlap=8),
                       labels=False)
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    ctx = np.flatnonzero(ws.offsets[0, :, 0] >= 0)
    start[0, ctx[0]], end[0, ctx[-1]] = 9, 9  # best start and best end: further apart than max_answer_len
    start[0, ctx[3]], end[0, ctx[4]] = 3, 3
    out = decode(ws, start, end, [ex], DecodeConfig(n_best_size=1, max_answer_len=5), nbest=True)
    assert out.nbest["a"] == [{"text": out.predictions["a"], "start": int(out.best_span[0, 0]),
                               "score": float(out.best_score[0]), "window": -1, "probability": 1.0}]
    assert out.best_span[0, 0] == ws.offsets[0, ctx[0], 0] and out.best_score[0] == 12  # start 9 + end 3 in reach
    with pytest.raises(IndexError):
        loop_nbest(ws, start, end, [ex], DecodeConfig(n_best_size=1, max_answer_len=5), out)


@pytest.mark.parametrize("step", [0.0, 0.5])
def test_top_k_is_argpartitions_pick(step):
    """The selection from column-group maxima gives, row by row, the set ``np.argpartition`` picks
    (less its −inf entries) in position order, also where the k-th value is tied (with an entry of
    its own column group or of another) and where fewer than k entries are finite."""
    rng = np.random.default_rng(int(step * 10))
    W, L, k = 3000, 48, 5
    G = L // 4  # the groups: columns j, j + G, j + 2 G, j + 3 G
    x = rng.normal(size=(W, L)).astype(np.float32)
    if step:  # coarse values: ties at every rank
        x = np.round(x / step) * step
    x[rng.random(x.shape) < 0.3] = -np.inf  # outside the context
    for r in range(W):  # a tie at the k-th value: with the next column of its group, or the next column
        top = np.argsort(-x[r], kind="stable")[:k]
        tie = (top[-1] + (G if r % 3 == 1 else 1)) % L
        if r % 3 and tie not in top:
            x[r, tie] = x[r, top[-1]]
    x[:40, 3:] = -np.inf  # fewer than k finite entries
    pos, val, kth, best = _top_k(x, k)
    pick = np.argpartition(x, L - k, axis=1)[:, L - k:]
    ranked = np.sort(x, axis=1)
    for r in range(W):
        want = sorted(p for p in pick[r].tolist() if x[r, p] > -np.inf)
        assert pos[r].tolist() == want + [2 * L] * (k - len(want))
        assert val[r].tolist() == x[r, want].tolist() + [-np.inf] * (k - len(want))
    assert np.array_equal(kth, ranked[:, L - k]) and np.array_equal(best, ranked[:, -1])


def test_rank_texts_sums_by_exact_text():
    """The same span from two windows, the same text at two places, two texts whose fingerprints
    clash (same length, same characters at the sampled places) and the empty text at two places."""
    # the third holds a lone surrogate: bad input, still text
    contexts = ["甲乙丙丁戊甲乙丙己戊甲乙丙丁戊", "天地玄黄", "\ud800甲\ud800甲"]
    #            span       window  probability
    cands = [((0, 0, 5), 0, 0.20),  # 甲乙丙丁戊 at 0
             ((0, 5, 10), 0, 0.15),  # 甲乙丙己戊: the fingerprint of 甲乙丙丁戊, another text
             ((0, 5, 10), 1, 0.15),  # the same span again, from window 1: 0.30 in all
             ((0, 10, 15), 1, 0.25),  # 甲乙丙丁戊 at 10: 0.45 with the one at 0, and the likelier place
             ((0, 3, 3), 1, 0.01), ((0, 8, 8), 1, 0.02),  # the empty text, twice
             ((1, 1, 3), 2, 0.50), ((1, 0, 2), 3, 0.10), ((1, 0, 2), 2, 0.40),  # 地玄; 天地: windows 3, 2
             ((2, 0, 2), 4, 0.20), ((2, 2, 4), 4, 0.30), ((2, 1, 3), 4, 0.40)]
    ex, a, b = (np.array(x) for x in zip(*[span for span, _, _ in cands]))
    w, p = np.array([c[1] for c in cands]), np.array([c[2] for c in cands])
    out = rank_texts(ex, a, b, w, np.log(p), contexts, n=3)
    got = [(int(e), contexts[e][s:t], int(s), round(float(np.exp(sc)), 5), int(k), round(float(q), 5))
           for e, s, t, sc, k, q in zip(*out)]
    assert got == [(0, "甲乙丙丁戊", 10, 0.45, 1, round(0.45 / 0.78, 5)),
                   (0, "甲乙丙己戊", 5, 0.30, 0, round(0.30 / 0.78, 5)),
                   (0, "", 8, 0.03, 1, round(0.03 / 0.78, 5)),
                   (1, "天地", 0, 0.50, 2, 0.5), (1, "地玄", 1, 0.50, 2, 0.5),  # a tie: the earlier start first
                   (2, "\ud800甲", 2, 0.50, 4, round(0.5 / 0.9, 5)), (2, "甲\ud800", 1, 0.40, 4, round(0.4 / 0.9, 5))]
    assert out[3].dtype == np.float32 and out[5].dtype == np.float64
    short = rank_texts(ex, a, b, w, np.log(p), contexts, n=1)
    assert [contexts[e][s:t] for e, s, t in zip(*short[:3])] == ["甲乙丙丁戊", "天地", "\ud800甲"]
    assert np.allclose(short[5], 1)
    # far below float64's range (e^-2000): relative to each example's best, the sums survive
    far = rank_texts(ex, a, b, w, np.log(p) - 2000, contexts, n=3)
    np.testing.assert_allclose(far[3], out[3] - 2000, rtol=1e-7)
    np.testing.assert_allclose(far[5], out[5], rtol=1e-12)
