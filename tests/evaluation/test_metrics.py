"""Tests for qa_scale.metrics: hand-computed values, an independent oracle, real data."""

from __future__ import annotations

import difflib
import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_scale.evaluation import metrics, segmentation
from qa_scale.evaluation.metrics import (
    PUNCTUATION,
    Scores,
    evaluate,
    exact_match,
    f1,
    mixed_segmentation,
    remove_punctuation,
    write_error_file,
)

# --------------------------------------------------------------------------------------
# Independent oracle: a plain transcription of the official script's algorithm, with a
# nested-list dynamic programme for the longest common substring. It shares only the
# NLTK tokenizer with the module (non-Chinese runs must be tokenized identically).
# --------------------------------------------------------------------------------------
ORACLE_PUNCT = [
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
]  # fmt: skip


def oracle_segment(text, rm_punc):
    text = str(text).lower().strip()
    segs, temp = [], ""
    for char in text:
        if rm_punc and char in ORACLE_PUNCT:
            continue
        if re.search("[\u4e00-\u9fa5]", char) or char in ORACLE_PUNCT:
            if temp != "":
                segs.extend(metrics.word_tokenize(temp))
                temp = ""
            segs.append(char)
        else:
            temp += char
    if temp != "":
        segs.extend(metrics.word_tokenize(temp))
    return segs


def oracle_lcs_len(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            if a[i] == b[j]:
                table[i + 1][j + 1] = table[i][j] + 1
                if table[i + 1][j + 1] > best:
                    best = table[i + 1][j + 1]
    return best


def oracle_strip_punct(text):
    return "".join(c for c in str(text).lower().strip() if c not in ORACLE_PUNCT)


def oracle_em(pred, refs):
    return 1 if any(oracle_strip_punct(r) == oracle_strip_punct(pred) for r in refs) else 0


def oracle_f1(pred, refs):
    scores = []
    for ref in refs:
        r, p = oracle_segment(ref, True), oracle_segment(pred, True)
        n = oracle_lcs_len(r, p)
        if n == 0:
            scores.append(0)
            continue
        prec, rec = n / len(p), n / len(r)
        scores.append(2 * prec * rec / (prec + rec))
    return max(scores)


def oracle_evaluate(predictions, references):
    em = f = 0.0
    unanswered = 0
    for qid, refs in references.items():
        if qid not in predictions:
            unanswered += 1
            continue
        em += oracle_em(predictions[qid], refs)
        f += oracle_f1(predictions[qid], refs)
    n = len(references)
    return 100 * em / n, 100 * f / n, n, unanswered


def assert_matches_oracle(predictions, references):
    if not any(qid.strip() in predictions for qid in references):
        # Nothing silent: predictions sharing no id with the references are refused, not scored 0.
        with pytest.raises(ValueError, match="none of its"):
            evaluate(predictions, references, allow_unanswerable=True)
        return
    # References without any answer are scored (0) only when asked; the oracle scores them so.
    scores = evaluate(predictions, references, allow_unanswerable=True)
    o_em, o_f1, o_total, o_unanswered = oracle_evaluate(predictions, references)
    assert scores.total == o_total
    assert scores.total - scores.answered == o_unanswered
    for q in scores.per_question:
        if q.answered:
            assert q.em == oracle_em(q.prediction, q.references), q
            assert q.f1 == pytest.approx(oracle_f1(q.prediction, q.references), abs=1e-6), q
    assert scores.em == pytest.approx(o_em, abs=1e-6)
    assert scores.f1 == pytest.approx(o_f1, abs=1e-6)


# --------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------
def test_punctuation_list_is_the_official_one():
    assert list(PUNCTUATION) == ORACLE_PUNCT
    assert len(PUNCTUATION) == 33


def test_segmentation_mixed_text():
    assert mixed_segmentation("2018年NBA总决赛") == ["2018", "年", "nba", "总", "决", "赛"]
    # '-' is listed punctuation: a segment of its own, or dropped with rm_punc.
    assert mixed_segmentation("ω-force") == ["ω", "-", "force"]
    assert mixed_segmentation("ω-force", rm_punc=True) == ["ωforce"]
    assert mixed_segmentation("《红楼梦》") == ["《", "红", "楼", "梦", "》"]
    assert mixed_segmentation("  3.5亿 ") == ["3.5", "亿"]
    assert mixed_segmentation("") == []


def test_cjk_range_matches_official_regex_at_boundaries():
    for char in ["\u4dff", "\u4e00", "\u9fa5", "\u9fa6", "a", "。", "\u3400"]:
        assert segmentation.is_cjk(char) == bool(re.search("[\u4e00-\u9fa5]", char))
    # U+9FA6 is a CJK ideograph outside the official range: it joins the NLTK buffer.
    assert mixed_segmentation("\u9fa6\u9fa6年") == ["\u9fa6\u9fa6", "年"]


def test_chinese_only():
    assert f1("北京", ["北京大学"]) == pytest.approx(2 / 3)
    assert f1("在北京大学里", ["北京大学"]) == pytest.approx(0.8)
    assert f1("上海", ["北京大学"]) == 0.0
    assert exact_match("北京大学", ["北京大学"]) == 1.0
    assert exact_match("北京", ["北京大学"]) == 0.0


def test_f1_uses_contiguous_run_not_subsequence():
    # Subsequence would give 3 common segments; the longest contiguous run is "大学" (2).
    # p = 2/3, r = 2/4 -> f1 = 4/7.
    assert f1("北大学", ["北京大学"]) == pytest.approx(4 / 7)


def test_mixed_chinese_english_numbers():
    # ref segments: 2018 年 nba 总 决 赛 (6); pred: nba 总 决 赛 (4); p = 1, r = 2/3.
    assert f1("NBA总决赛", ["2018年NBA总决赛"]) == pytest.approx(0.8)
    assert exact_match("NBA总决赛", ["2018年NBA总决赛"]) == 0.0
    assert f1("jordan", ["Michael Jordan"]) == pytest.approx(2 / 3)
    assert f1("2018年", ["2018年NBA总决赛"]) == pytest.approx(2 * (2 / 6) / (1 + 2 / 6))


def test_punctuation_removal_affects_em_and_f1():
    assert exact_match("《红楼梦》", ["红楼梦"]) == 1.0
    assert f1("《红楼梦》", ["红楼梦"]) == 1.0
    assert exact_match("红楼梦。", ["红楼梦"]) == 1.0
    # The ASCII comma is not in the list: it survives as its own NLTK token.
    assert exact_match("红楼梦,", ["红楼梦"]) == 0.0
    assert f1("红楼梦,", ["红楼梦"]) == pytest.approx(6 / 7)
    # '……' is a two-character entry and never matches, but '…' is not listed either.
    assert remove_punctuation("好……") == "好……"
    assert remove_punctuation("A-B：C") == "abc"


def test_case_folding_and_whitespace():
    assert exact_match("nba", ["NBA"]) == 1.0
    assert exact_match("  红楼梦 \n", ["红楼梦"]) == 1.0
    # Inner whitespace is kept for EM but vanishes in segmentation, so F1 is perfect.
    assert exact_match("红 楼梦", ["红楼梦"]) == 0.0
    assert f1("红 楼梦", ["红楼梦"]) == 1.0


def test_multiple_references_take_the_max():
    assert exact_match("北京大学", ["北京", "北京大学"]) == 1.0
    assert f1("北京大学", ["清华", "北京大学城"]) == pytest.approx(8 / 9)
    assert f1("北京大学", ["北京大学城", "清华"]) == pytest.approx(8 / 9)


def test_empty_prediction_and_empty_references():
    assert f1("", ["红楼梦"]) == 0.0
    assert exact_match("", ["红楼梦"]) == 0.0
    # Quirk of the official script: an all-punctuation prediction "equals" an empty
    # reference for EM, yet has no segments in common for F1.
    assert exact_match("《》", [""]) == 1.0
    assert f1("《》", [""]) == 0.0
    assert exact_match("红楼梦", []) == 0.0
    assert f1("红楼梦", []) == 0.0
    with pytest.raises(TypeError):
        f1("红楼梦", "红楼梦")


def test_corpus_scores_unanswered_and_hw7():
    refs = {
        "q1": ["红楼梦"],
        "q2": ["2018年NBA总决赛"],
        "q3": ["北京大学"],
        "q4": ["北京", "北京市"],
    }
    preds = {"q1": "《红楼梦》", "q2": "NBA总决赛", "q4": "北京", "extra": "ignored"}
    scores = evaluate(preds, refs, hw7=True)
    assert scores.total == 4
    assert scores.answered == 3
    assert scores.em == pytest.approx(100 * 2 / 4)
    assert scores.f1 == pytest.approx(100 * (1 + 0.8 + 0 + 1) / 4)
    # HW7 is strict: "《红楼梦》" is wrong although it is an exact match for CMRC.
    assert scores.hw7_accuracy == pytest.approx(1 / 4)
    q3 = scores.per_question[2]
    assert (q3.id, q3.answered, q3.em, q3.f1) == ("q3", False, 0.0, 0.0)
    assert evaluate(preds, refs).hw7_accuracy is None


def test_hw7_has_no_normalisation():
    refs = [("a", ["红楼梦"]), ("b", ["NBA"]), ("c", ["红楼梦"])]
    scores = evaluate({"a": " 红楼梦", "b": "nba", "c": "红楼梦"}, refs, hw7=True)
    assert scores.em == pytest.approx(100.0)
    assert scores.hw7_accuracy == pytest.approx(1 / 3)


def test_references_as_pairs_keep_order_and_ids_are_stripped():
    scores = evaluate({"b": "x", "a": "y"}, [(" b ", ["x"]), ("a", ["z"])])
    assert [q.id for q in scores.per_question] == ["b", "a"]
    assert [q.em for q in scores.per_question] == [1.0, 0.0]
    with pytest.raises(ValueError):
        evaluate({}, {})


def test_to_dict():
    scores = evaluate({"a": "红楼梦"}, {"a": ["红楼梦"]})
    d = scores.to_dict()
    assert d == {"em": 100.0, "f1": 100.0, "total": 1, "answered": 1, "no_reference": 0, "hw7_accuracy": None}
    full = scores.to_dict(include_per_question=True)
    assert full["per_question"] == [
        {"id": "a", "prediction": "红楼梦", "references": ["红楼梦"], "em": 1.0, "f1": 1.0,
         "answered": True}
    ]
    json.dumps(full)


def test_tokenizer_backend_selection(monkeypatch):
    import nltk

    def missing(_name):
        raise LookupError("no punkt_tab")

    segmentation.select_tokenizer.cache_clear()
    try:
        monkeypatch.setattr(nltk.data, "find", missing)
        assert metrics.tokenizer_backend() == "fallback"
        segmentation.select_tokenizer.cache_clear()
        monkeypatch.setattr(nltk.data, "find", lambda name: name)
        assert metrics.tokenizer_backend() == "punkt_tab"
        assert segmentation.select_tokenizer()[1] is nltk.word_tokenize
    finally:
        monkeypatch.undo()
        segmentation.select_tokenizer.cache_clear()
    # Both backends agree on ordinary text.
    assert metrics.word_tokenize("hello world. nba finals") == [
        "hello", "world", ".", "nba", "finals"
    ]


# --------------------------------------------------------------------------------------
# difflib longest match == naive DP
# --------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from("abc"), max_size=40),
    st.lists(st.sampled_from("abc"), max_size=40),
)
def test_longest_common_run_matches_dp_small(a, b):
    assert metrics._longest_common_run(a, b) == oracle_lcs_len(a, b)


def test_longest_common_run_matches_dp_long():
    rng = random.Random(2018)
    for _ in range(16):
        alphabet = "abcde"[: rng.randint(1, 5)]
        a = [rng.choice(alphabet) for _ in range(rng.randint(200, 360))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(150, 360))]
        assert metrics._longest_common_run(a, b) == oracle_lcs_len(a, b)
    # Why autojunk=False: with the default, an element making up more than 1% of a
    # 200+ item sequence is "popular" and never starts a match.
    a, b = ["y"] + ["x"] * 300, ["x"] * 300
    assert metrics._longest_common_run(a, b) == 300
    assert difflib.SequenceMatcher(None, a, b).find_longest_match(0, 301, 0, 300).size == 0


# --------------------------------------------------------------------------------------
# Property test against the oracle
# --------------------------------------------------------------------------------------
ALPHABET = (
    list("北京大学红楼梦年总决赛")
    + ["\u4e00", "\u9fa5", "\u9fa6", "\u4dff"]
    + list("abcABZ")
    + list("0129")
    + [" ", "\t", ".", ",", "'", '"', "…"]
    + [p for p in ORACLE_PUNCT if len(p) == 1]
)
texts = st.text(alphabet=st.sampled_from(ALPHABET), max_size=16)


@st.composite
def qa_case(draw):
    refs = draw(st.lists(texts, min_size=1, max_size=3))
    kind = draw(st.sampled_from(["random", "slice", "missing"]))
    if kind == "missing":
        return refs, None
    if kind == "slice":
        base = refs[0]
        i = draw(st.integers(0, len(base)))
        j = draw(st.integers(i, len(base)))
        return refs, draw(texts) + base[i:j] + draw(texts)
    return refs, draw(texts)


@settings(max_examples=150, deadline=None)
@given(st.lists(qa_case(), min_size=1, max_size=6))
def test_evaluate_matches_oracle_on_random_text(cases):
    references = {f"q{i}": refs for i, (refs, _) in enumerate(cases)}
    predictions = {f"q{i}": p for i, (_, p) in enumerate(cases) if p is not None}
    assert_matches_oracle(predictions, references)


# --------------------------------------------------------------------------------------
# Real data: CMRC 2018 dev, perturbed first references
# --------------------------------------------------------------------------------------
def _load_cmrc_dev(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append((qa["id"], para["context"], qa["answers"]))
    return out


def test_evaluate_matches_oracle_on_cmrc2018_dev(shared_data):
    questions = _load_cmrc_dev(shared_data / "cmrc2018_dev.json")
    assert len(questions) == 3219
    references = {qid: [a["text"] for a in answers] for qid, _, answers in questions}
    rng = random.Random(7)
    perturbed = {name: {} for name in ("drop_first", "drop_last", "extend", "random")}
    for qid, context, answers in questions:
        text, start = answers[0]["text"], answers[0]["answer_start"]
        perturbed["drop_first"][qid] = text[1:]
        perturbed["drop_last"][qid] = text[:-1]
        if context[start : start + len(text)] != text:  # ~200 misaligned starts
            start = context.find(text)
        if start < 0:
            perturbed["extend"][qid] = text + context[:3]
        else:
            lo = max(0, start - rng.randint(0, 4))
            hi = start + len(text) + rng.randint(1, 4)
            perturbed["extend"][qid] = context[lo:hi]
        i = rng.randrange(len(context))
        perturbed["random"][qid] = context[i : i + rng.randint(1, 30)]
    # Leave some questions unanswered so the denominator logic is exercised too.
    for qid in list(perturbed["random"])[::97]:
        del perturbed["random"][qid]
    for predictions in perturbed.values():
        assert_matches_oracle(predictions, references)
    # Sanity: the unperturbed first reference is always an exact match.
    exact = evaluate({qid: refs[0] for qid, refs in references.items()}, references, hw7=True)
    assert exact.em == pytest.approx(100.0) and exact.f1 == pytest.approx(100.0)
    assert exact.hw7_accuracy == pytest.approx(1.0)


# --------------------------------------------------------------------------------------
# Error file
# --------------------------------------------------------------------------------------
def test_write_error_file_order_and_content(tmp_path):
    refs = {
        "ok1": ["红楼梦"],
        "bad_partial": ["北京大学"],
        "bad_zero": ["上海"],
        "missing": ["西游记"],
        "ok2": ["NBA"],
        "bad_high": ["2018年NBA总决赛"],
    }
    preds = {"ok1": "《红楼梦》", "bad_partial": "北京", "bad_zero": "广州", "ok2": "nba",
             "bad_high": "NBA总决赛"}
    scores = evaluate(preds, refs)
    out = tmp_path / "sub" / "errors.jsonl"
    out.parent.mkdir()
    out.write_text("stale\n", encoding="utf-8")  # must be replaced, not appended to
    write_error_file(scores, out)

    raw = out.read_bytes()
    assert "红楼梦".encode() in raw  # ensure_ascii=False: real UTF-8, no \\u escapes
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    # Errors by ascending F1 (ties keep reference order), then the exact matches.
    assert [r["id"] for r in rows] == [
        "bad_zero", "missing", "bad_partial", "bad_high", "ok1", "ok2"
    ]
    assert set(rows[0]) == {"id", "prediction", "references", "em", "f1", "answered"}
    assert rows[1] == {"id": "missing", "prediction": "", "references": ["西游记"],
                       "em": 0.0, "f1": 0.0, "answered": False}
    assert rows[2]["f1"] == pytest.approx(2 / 3)
    assert rows[4]["prediction"] == "《红楼梦》" and rows[4]["em"] == 1.0
    assert sorted(p.name for p in out.parent.iterdir()) == ["errors.jsonl"]


def test_write_error_file_creates_parent_dirs(tmp_path):
    scores = Scores(em=0.0, f1=0.0, total=0, answered=0, hw7_accuracy=None, per_question=[])
    out = tmp_path / "a" / "b" / "errors.jsonl"
    write_error_file(scores, str(out))
    assert out.read_text(encoding="utf-8") == ""
