"""The shared n-best decoder: exact small cases, brute force on random logits, options."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORPUS

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
