"""The shared n-best decoder: exact small cases, brute force on random logits, options."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
from conftest import CORPUS
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qa_scale.data import Example
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.evaluation.decode import DecodeConfig, balance_span, decode

CFG = WindowConfig(max_seq_len=32, max_question_len=8, doc_overlap=6)


def windows_of(tok, exs, cfg=CFG):
    return build_windows(exs, tok, cfg, labels=False)


def brute_best(ws, start, end, max_len):
    """Best start+end score of each example over every valid pair: the exhaustive answer."""
    best = np.full(len(ws.example_ids), -np.inf)
    for w in range(len(ws)):
        ctx = np.flatnonzero(ws.offsets[w, :, 0] >= 0)
        for i in ctx:
            for j in ctx[(ctx >= i) & (ctx < i + max_len)]:
                best[ws.example_index[w]] = max(best[ws.example_index[w]], start[w, i] + end[w, j])
    return best


def test_exact_answer_from_the_right_window(char_tokenizer):
    ctx = CORPUS[1] + CORPUS[0]
    ex = Example("a", "谁？", ctx)
    ws = windows_of(char_tokenizer, [ex])
    assert len(ws) >= 3
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    target = ctx.index("故宫")
    w = int(np.flatnonzero([(ws.offsets[k, :, 0] == target).any() for k in range(len(ws))])[-1])
    i = int(np.flatnonzero(ws.offsets[w, :, 0] == target)[0])
    start[w, i], end[w, i + 1] = 5.0, 4.0
    start[0, 0] = end[0, 0] = 50.0  # CLS: ignored without a null threshold
    out = decode(ws, start, end, [ex], DecodeConfig(n_best_size=5), nbest=True)
    assert out.predictions == {"a": "故宫"}
    top = out.nbest["a"][0]
    assert (top["text"], top["start"], top["score"], top["window"]) == ("故宫", target, 9.0, w)
    assert len(out.nbest["a"]) == 5 and abs(sum(c["probability"] for c in out.nbest["a"]) - 1) < 1e-9
    scores = [c["score"] for c in out.nbest["a"]]
    assert scores == sorted(scores, reverse=True)
    spans = [(c["start"], len(c["text"])) for c in out.nbest["a"]]
    assert len(set(spans)) == len(spans)  # one entry per span, even when windows overlap


@pytest.mark.parametrize("seed,max_len,n_best", [(0, 7, 1), (1, 1, 3), (2, 30, 20), (3, 3, 32)])
def test_best_answer_is_the_exhaustive_optimum(char_tokenizer, seed, max_len, n_best):
    exs = [Example(f"e{i}", "问题？", CORPUS[i] + CORPUS[(i + 2) % 5]) for i in range(5)]
    ws = windows_of(char_tokenizer, exs)
    rng = np.random.default_rng(seed)
    start, end = rng.normal(size=(2, *ws.input_ids.shape)).astype(np.float32)
    out = decode(ws, start, end, exs, DecodeConfig(n_best_size=n_best, max_answer_len=max_len), nbest=True)
    np.testing.assert_allclose(out.best_score, brute_best(ws, start, end, max_len), rtol=0, atol=1e-5)
    for n, ex in enumerate(exs):
        best = out.nbest[ex.id][0]
        a, b = out.best_span[n]
        assert out.predictions[ex.id] == ex.context[a:b] == best["text"] and best["score"] == pytest.approx(out.best_score[n])
        assert len(char_tokenizer(best["text"], add_special_tokens=False)["input_ids"]) <= max_len
        assert len(out.nbest[ex.id]) <= n_best


def test_never_below_a_reference_style_top_k_search(char_tokenizer):
    """HF utils_qa style: top-k over all positions, then filter; ours filters first, so ≥."""
    exs = [Example(f"e{i}", "问题？" * 2, CORPUS[i] * 2) for i in range(5)]
    ws = windows_of(char_tokenizer, exs)
    rng = np.random.default_rng(7)
    start, end = rng.normal(size=(2, *ws.input_ids.shape)).astype(np.float32)
    outside = ws.offsets[:, :, 0] < 0
    start[outside] += 3  # question and padding look attractive: the reference wastes its top-k there
    end[outside] += 3
    k, ref = 4, np.full(len(exs), -np.inf)
    for w in range(len(ws)):
        for i in np.argsort(start[w])[::-1][:k]:
            for j in np.argsort(end[w])[::-1][:k]:
                if ws.offsets[w, i, 0] >= 0 and ws.offsets[w, j, 0] >= 0 and i <= j < i + 30:
                    e = ws.example_index[w]
                    ref[e] = max(ref[e], start[w, i] + end[w, j])
    ours = decode(ws, start, end, exs, DecodeConfig(n_best_size=k)).best_score
    assert (ours >= ref - 1e-6).all() and (ours > ref + 1e-3).any()


def test_text_comes_from_the_context_not_from_tokens(bert_tokenizer):
    ctx = "他在New York Times工作，也研究㐀字和ＡＢＣ。"
    ex = Example("a", "哪里？", ctx)
    ws = build_windows([ex], bert_tokenizer, WindowConfig(max_seq_len=64, max_question_len=8, doc_overlap=8))
    for answer in ("New York Times", "㐀字", "ＡＢＣ"):
        s, e = ctx.index(answer), ctx.index(answer) + len(answer)
        i = int(np.flatnonzero(ws.offsets[0, :, 0] == s)[0])
        j = int(np.flatnonzero(ws.offsets[0, :, 1] == e)[0])
        start = np.zeros(ws.input_ids.shape, np.float32)
        end = np.zeros(ws.input_ids.shape, np.float32)
        start[0, i] = end[0, j] = 10
        assert decode(ws, start, end, [ex]).predictions["a"] == answer
    assert "[UNK]" in bert_tokenizer.decode(ws.input_ids[0])  # what tokenizer.decode would have given


def test_null_threshold_and_no_valid_span(char_tokenizer):
    exs = [Example("a", "问题？", CORPUS[0]), Example("b", "问题？", CORPUS[2])]
    ws = windows_of(char_tokenizer, exs)
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    start[ws.example_index == 0, 0] = end[ws.example_index == 0, 0] = 5.0  # CLS wins for "a" in every window
    plain = decode(ws, start, end, exs)
    assert plain.predictions["a"] != "" and np.isclose(plain.null_score[0], 10.0)
    with_null = decode(ws, start, end, exs, DecodeConfig(null_threshold=1.0))
    assert with_null.predictions["a"] == "" and with_null.predictions["b"] != ""
    start[:, 1:] = -np.inf  # only CLS left: no valid span anywhere
    none = decode(ws, start, end, exs)
    assert none.predictions == {"a": "", "b": ""} and none.no_span == ["a", "b"]


@pytest.mark.parametrize("context,span,expected", [
    ("书名是《红楼梦》。", "《红楼梦", "《红楼梦》"),
    ("书名是《红楼梦。", "《红楼梦", "红楼梦"),
    ("书名是《红楼梦》。", "红楼梦》", "《红楼梦》"),
    ("他说：「好」。", "「好", "「好」"),
    ("（注）文字", "注）", "（注）"),
    ("平衡的《书》", "《书》", "《书》"),
    ("没有标记", "标记", "标记"),
])
def test_balance_span(context, span, expected):
    s = context.index(span)
    a, b = balance_span(context, s, s + len(span))
    assert context[a:b] == expected


def test_balance_marks_is_off_by_default(char_tokenizer):
    ctx = "《红楼梦》是曹雪芹的作品。"
    ex = Example("a", "书？", ctx)
    ws = build_windows([ex], char_tokenizer, WindowConfig(max_seq_len=32, max_question_len=4, doc_overlap=4), labels=False)
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    start[0, int(np.flatnonzero(ws.offsets[0, :, 0] == 0)[0])] = 9
    end[0, int(np.flatnonzero(ws.offsets[0, :, 1] == 4)[0])] = 9
    assert decode(ws, start, end, [ex]).predictions["a"] == "《红楼梦"
    assert decode(ws, start, end, [ex], DecodeConfig(balance_marks=True)).predictions["a"] == "《红楼梦》"


def test_mismatched_inputs_are_refused(char_tokenizer):
    exs = [Example("a", "问题？", CORPUS[0])]
    ws = windows_of(char_tokenizer, exs)
    logits = np.zeros(ws.input_ids.shape, np.float32)
    with pytest.raises(ValueError, match="example ids"):
        decode(ws, logits, logits, [Example("b", "问题？", CORPUS[0])])
    with pytest.raises(ValueError, match="do not fit"):
        decode(ws, logits[:, :5], logits, exs)
    with pytest.raises(ValueError, match="n_best_size"):
        DecodeConfig(n_best_size=0)


# --- across_windows="sum_probability": the Hugging Face pipeline's way of combining windows ---------

SUM = "sum_probability"


def summed_reference(ws, start, end, exs, k, max_len):
    """The sum_probability rule in plain loops, from the documented definition.

    Per window: log-softmax of the start and of the end logits over its context tokens and CLS;
    candidates: the valid pairs among the top-k context starts × top-k context ends scoring at least
    the k-th best such pair (ties kept), plus the window's exact best valid pair (first by start,
    then end) when none of them reaches its score; probability p_start·p_end. Returns, per example:
    {text: probability summed over windows and positions}, {(char start, end): probability summed
    over windows}, and the lowest log p_start(CLS) + log p_end(CLS) over its windows; and whether a
    window's k-th and (k+1)-th start or end logit tie (then which of them the decoder's top k holds
    is its selection's choice, not the definition's).
    """
    texts = [collections.defaultdict(float) for _ in exs]
    spans = [collections.defaultdict(float) for _ in exs]
    null, tied = [math.inf] * len(exs), False
    for w in range(len(ws)):
        n, cls = int(ws.example_index[w]), int(ws.cls_index[w])
        toks = [t for t in range(start.shape[1]) if ws.offsets[w, t, 0] >= 0]

        def log_norm(x):
            vals = [float(x[w, t]) for t in toks + [cls]]
            m = max(vals)
            return m + math.log(sum(math.exp(v - m) for v in vals))

        def top(x):
            nonlocal tied
            ranked = sorted(toks, key=lambda t: -x[w, t])
            tied |= len(ranked) > k and x[w, ranked[k - 1]] == x[w, ranked[k]]
            return ranked[:k]

        def score(ij):
            return start[w, ij[0]] + end[w, ij[1]]  # float32, as the decoder compares them

        norm_s, norm_e = log_norm(start), log_norm(end)
        null[n] = min(null[n], (float(start[w, cls]) - norm_s) + (float(end[w, cls]) - norm_e))
        grid = [(i, j) for i in top(start) for j in top(end) if i <= j < i + max_len]
        if len(grid) > k:
            floor = sorted(map(score, grid), reverse=True)[k - 1]
            grid = [ij for ij in grid if score(ij) >= floor]
        best = max(((i, j) for i in toks for j in toks if i <= j < i + max_len), key=score)
        if not grid or max(map(score, grid)) < score(best):
            grid.append(best)
        for i, j in grid:
            a, b = int(ws.offsets[w, i, 0]), int(ws.offsets[w, j, 1])
            p = math.exp((float(start[w, i]) - norm_s) + (float(end[w, j]) - norm_e))
            texts[n][exs[n].context[a:b]] += p
            spans[n][(a, b)] += p
    return texts, spans, null, tied


def token_of(ws, w, char, side=0):
    """Token of window ``w`` whose character offset (0: start, 1: end) is ``char``."""
    return int(np.flatnonzero((ws.offsets[w, :, side] == char) & ws.context_mask[w])[0])


def windows_holding(ws, a, b):
    return [w for w in range(len(ws)) if ws.context_mask[w].any()
            and (ws.offsets[w, :, 0] == a).any() and (ws.offsets[w, :, 1] == b).any()]


def test_sum_probability_prefers_a_text_many_windows_agree_on(char_tokenizer):
    """Two windows each give 北京 a moderate probability (at its two places in the context); one
    window gives 杭州 the single highest start + end score, but shares its probability with a close
    rival there. max_score answers 杭州, sum_probability 北京, with the summed probability."""
    ctx = CORPUS[0] + CORPUS[1] + CORPUS[0]
    ex = Example("a", "谁？", ctx)
    ws = windows_of(char_tokenizer, [ex])
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    first, second, y, z = ctx.index("北京"), ctx.rindex("北京"), ctx.index("杭州"), ctx.index("出生")
    wa, wb, wc = windows_holding(ws, first, first + 2)[0], windows_holding(ws, second, second + 2)[-1], \
        windows_holding(ws, z, y + 2)[-1]
    assert len({wa, wb, wc}) == 3 and wc not in windows_holding(ws, first, first + 2)
    for w, a, v in ((wa, first, 3.0), (wb, second, 3.0), (wc, y, 4.0), (wc, z, 3.9)):
        start[w, token_of(ws, w, a)], end[w, token_of(ws, w, a + 2, 1)] = v, v
    k = 32  # every context token of a window: no tie at the k-th start or end
    texts, spans, null, tied = summed_reference(ws, start, end, [ex], k, 30)
    assert texts[0]["北京"] > 1.5 * texts[0]["杭州"] and not tied  # the test's premises

    plain = decode(ws, start, end, [ex], DecodeConfig(n_best_size=k), nbest=True)
    assert plain.predictions["a"] == "杭州" and plain.best_score[0] == 8.0
    out = decode(ws, start, end, [ex], DecodeConfig(n_best_size=k, across_windows=SUM), nbest=True)
    assert out.predictions["a"] == "北京"
    assert math.exp(out.best_score[0]) == pytest.approx(texts[0]["北京"], abs=1e-6)
    assert out.null_score[0] == pytest.approx(null[0], abs=1e-5)
    # the span: the place of 北京 with the higher probability (each window's normaliser differs)
    where = max((first, first + 2), (second, second + 2), key=spans[0].get)
    assert tuple(out.best_span[0]) == where
    top = out.nbest["a"][0]
    assert (top["text"], top["start"], top["window"]) == ("北京", where[0], wa if where[0] == first else wb)
    listed = out.nbest["a"]
    assert [c["text"] for c in listed] == sorted(texts[0], key=texts[0].get, reverse=True)[:k]
    total = sum(texts[0][c["text"]] for c in listed)
    for c in listed:
        assert c["probability"] == pytest.approx(texts[0][c["text"]] / total, abs=1e-6)
        assert math.exp(c["score"]) == pytest.approx(texts[0][c["text"]], rel=1e-6)
    # the answers alone are the same without n-best lists
    alone = decode(ws, start, end, [ex], DecodeConfig(n_best_size=k, across_windows=SUM))
    assert alone.predictions == out.predictions and np.array_equal(alone.best_span, out.best_span)
    assert np.array_equal(alone.best_score, out.best_score) and alone.nbest_lists is None


def test_sum_probability_null_threshold_compares_log_probabilities(char_tokenizer):
    exs = [Example("a", "问题？", CORPUS[0]), Example("b", "问题？", CORPUS[2])]
    ws = windows_of(char_tokenizer, exs)
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    start[ws.example_index == 0, 0] = end[ws.example_index == 0, 0] = 8.0  # every window of "a" points at CLS
    config = DecodeConfig(across_windows=SUM, n_best_size=32)
    out = decode(ws, start, end, exs, config)
    assert out.predictions["a"] != "" and (out.null_score <= 0).all()
    assert out.null_score[0] > out.best_score[0] and out.null_score[1] < out.best_score[1]
    with_null = decode(ws, start, end, exs, DecodeConfig(across_windows=SUM, n_best_size=32, null_threshold=0.0))
    assert with_null.predictions["a"] == "" and with_null.predictions["b"] == out.predictions["b"] != ""
    start[:, 1:] = -np.inf  # only CLS left: no valid span anywhere
    none = decode(ws, start, end, exs, config, nbest=True)
    assert none.predictions == {"a": "", "b": ""} and none.no_span == ["a", "b"] and none.nbest == {"a": [], "b": []}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sum_probability_matches_a_plain_loop(char_tokenizer, data):
    """Random logits and window layouts (contexts from few characters, so that the same text turns
    up at many places and in several windows): the answer is a valid span, its probability and every
    n-best entry's are the loop's sums over windows, and the lists are the loop's most probable texts."""
    # few characters: the same text at many places; a run of digits: one [UNK] token of several characters
    few_chars = st.text("北京上海中国的城市12", min_size=1, max_size=50)
    contexts = data.draw(st.lists(few_chars, min_size=1, max_size=3))
    exs = [Example(f"e{n}", "谁？", c) for n, c in enumerate(contexts)]
    seq = data.draw(st.integers(10, 32))  # the context of a window: seq - 7 tokens (a 4-token question, 3 special)
    cfg = WindowConfig(max_seq_len=seq, max_question_len=4, doc_overlap=data.draw(st.integers(0, min(6, seq - 8))))
    ws = windows_of(char_tokenizer, exs, cfg)
    k, max_len = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    scale = data.draw(st.sampled_from([0.3, 1.0, 3.0, 8.0]))
    start, end = (scale * rng.normal(size=(2, *ws.input_ids.shape))).astype(np.float32)
    start[:, 0] += np.float32(data.draw(st.integers(-4, 6)))  # CLS: from ignored to dominant
    texts, spans, null, tied = summed_reference(ws, start, end, exs, k, max_len)
    assume(not tied)

    config = DecodeConfig(n_best_size=k, max_answer_len=max_len, across_windows=SUM)
    out = decode(ws, start, end, exs, config, nbest=True)
    for n, ex in enumerate(exs):
        answer, (a, b) = out.predictions[ex.id], out.best_span[n].tolist()
        # a valid span: context tokens i ≤ j of one window of the example, at most max_len tokens
        assert answer == ex.context[a:b] != ""
        assert any(ws.example_index[w] == n and j - i < max_len for w in range(len(ws))
                   for i in np.flatnonzero(ws.context_mask[w] & (ws.offsets[w, :, 0] == a))
                   for j in np.flatnonzero(ws.context_mask[w] & (ws.offsets[w, :, 1] == b)) if i <= j)
        assert abs(math.exp(out.best_score[n]) - texts[n][answer]) <= 1e-6
        assert texts[n][answer] >= max(texts[n].values()) - 1e-6  # the most probable text
        assert spans[n][(a, b)] >= max(p for (c, d), p in spans[n].items() if ex.context[c:d] == answer) - 1e-9
        assert out.null_score[n] == pytest.approx(null[n], abs=1e-5)
        listed = out.nbest[ex.id]
        names = [c["text"] for c in listed]
        assert len(names) == len(set(names)) == min(k, len(texts[n])) and names[0] == answer
        assert listed[0]["start"] == a
        assert all(abs(math.exp(c["score"]) - texts[n][c["text"]]) <= 1e-6 for c in listed)
        assert all(x["score"] >= y["score"] for x, y in zip(listed, listed[1:]))
        assert all(p <= texts[n][names[-1]] + 1e-6 for t, p in texts[n].items() if t not in names)
        total = sum(texts[n][t] for t in names)
        assert all(abs(c["probability"] - texts[n][c["text"]] / total) <= 1e-6 for c in listed)
    alone = decode(ws, start, end, exs, config)
    assert alone.predictions == out.predictions and np.array_equal(alone.best_score, out.best_score)


def test_sum_probability_by_blocks_equals_one_block(char_tokenizer, monkeypatch):
    """Blocks of whole examples (threads) give what one block gives."""
    from qa_scale.evaluation import decode as module

    rng = np.random.default_rng(3)
    exs = [Example(f"e{i}", "问题？", "".join(rng.permutation(CORPUS)[: 2 + i % 3])) for i in range(12)]
    ws = windows_of(char_tokenizer, exs)
    start, end = rng.normal(size=(2, *ws.input_ids.shape)).astype(np.float32)
    config = DecodeConfig(n_best_size=6, max_answer_len=8, across_windows=SUM)
    one = decode(ws, start, end, exs, config, nbest=True)
    monkeypatch.setattr(module, "_BLOCK", 3)
    many = decode(ws, start, end, exs, config, nbest=True)
    assert many.predictions == one.predictions and many.nbest == one.nbest
    for f in ("best_score", "best_span", "null_score"):
        assert np.array_equal(getattr(many, f), getattr(one, f))


def test_across_windows_flag_reaches_decode_config():
    from qa_scale.cli.app import build_parser
    from qa_scale.common.settings import FieldError
    from qa_scale.common.settings import given as given_flags
    from qa_scale.inference.options import ReaderOptions

    parser = build_parser()
    args = parser.parse_args(["ensemble", "s1", "s2", "--out", "o", "--across-windows", SUM])
    assert DecodeConfig(**given_flags(args, DecodeConfig)).across_windows == SUM
    for argv in (["predict", "model", "dev.json", "--out", "o"], ["answer", "model", "--context", "c"]):
        args = parser.parse_args([*argv, "--across-windows", SUM])
        assert ReaderOptions.from_arguments(args).decoding == {"across_windows": SUM}
        assert "across_windows" not in ReaderOptions.from_arguments(parser.parse_args(argv)).decoding
    assert DecodeConfig().across_windows == "max_score"
    with pytest.raises(SystemExit):
        parser.parse_args(["ensemble", "s1", "--out", "o", "--across-windows", "mean"])
    with pytest.raises(FieldError, match="across_windows"):
        DecodeConfig(across_windows="mean")
