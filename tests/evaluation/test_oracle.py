"""Oracle fidelity: windowing loses nothing beyond token boundaries; the decoder's answer-length limit
costs what it costs, measured and asserted exactly."""

from __future__ import annotations

import pytest

from qa_scale import data, synthetic
from qa_scale.data import Answer, Example
from qa_scale.data.windows import WindowConfig
from qa_scale.evaluation.oracle import oracle_fidelity

HW7_WINDOWS = WindowConfig(max_seq_len=213, max_question_len=60, max_context_len=150, doc_step=15)
HF_WINDOWS = WindowConfig(max_seq_len=384, max_question_len=64, doc_overlap=128)


def test_sample_data_is_fully_reachable(bert_tokenizer, tmp_path):
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=1, dev_paragraphs=30, test_paragraphs=1), tmp_path)
    ds = data.load(paths["squad_dev"])
    for cfg in (WindowConfig(max_seq_len=128, max_question_len=32, doc_overlap=32), HW7_WINDOWS):
        report = oracle_fidelity(ds.examples, bert_tokenizer, cfg)
        assert report.em_any_reference == 100.0 and report.unreachable == []
        assert report.windows > len(ds.examples)  # paragraphs need several windows


def test_unreachable_answers_are_listed_with_reasons(bert_tokenizer):
    ctx = "他出生于2018年的NBA总决赛期间。" + "后来的故事很长。" * 60
    exs = [
        Example("inside-token", "问？", ctx, (Answer("01", ctx.index("2018") + 1),)),  # '2018' is one token
        Example("too-long", "问？", ctx, (Answer(ctx[20:200], 20),)),
        Example("fine", "问？", ctx, (Answer("NBA", ctx.index("NBA")),)),
    ]
    report = oracle_fidelity(exs, bert_tokenizer, WindowConfig(max_seq_len=64, max_question_len=8, doc_overlap=16))
    reasons = {u["id"]: u["reason"] for u in report.unreachable}
    assert reasons == {"inside-token": "not on token boundaries", "too-long": "longer than a window"}
    assert report.em_any_reference == pytest.approx(100 / 3)
    assert report.answers_longer_than_max_answer_len == 1


def test_answers_longer_than_the_decoders_limit_are_lost_and_counted(bert_tokenizer):
    ctx = "故事开始于北京。" + "他们一起走过了很多很多的地方。" * 3 + "故事结束了。"
    long_answer = ctx[8:8 + 45]  # 45 characters: 45 tokens
    exs = [Example("long", "问？", ctx, (Answer(long_answer, 8),)), Example("short", "问？", ctx, (Answer("北京", 5),))]
    cfg = WindowConfig(max_seq_len=128, max_question_len=8, doc_overlap=16)
    report = oracle_fidelity(exs, bert_tokenizer, cfg)  # the decoder's default limit: 30 tokens
    assert report.max_answer_len == 30 and report.em_any_reference == 50.0
    assert report.windowing_only.em_any_reference == 100.0
    assert report.lost_to_max_answer_len == report.answers_longer_than_max_answer_len == 1
    assert report.unreachable == [{"id": "long", "answers": [long_answer], "reason": "longer than max_answer_len (30 tokens)"}]
    assert oracle_fidelity(exs, bert_tokenizer, cfg, max_answer_len=45).em_any_reference == 100.0
    assert oracle_fidelity(exs, bert_tokenizer, cfg, max_answer_len=44).em_any_reference == 50.0


# Measured (README "Results"): examples, exact matches (any reference, first reference) and F1 with the
# decoder's real limit of 30 tokens, the same without a limit (windowing alone), and what the limit costs.
REAL = {
    "cmrc2018_dev.json": {"examples": 3219, "em_any": 3062, "em_first": 3043, "f1": 95.37319032862405,
                          "windowing_em_any": 3219, "windowing_em_first": 3218, "lost": 157, "longer": 175},
    "drcd_dev.json": {"examples": 3524, "em_any": 3523, "em_first": 3517, "f1": 99.97311667363643,
                      "windowing_em_any": 3524, "windowing_em_first": 3522, "lost": 1, "longer": 5},
}
WINDOWS = {("cmrc2018_dev.json", "overlap128"): 6327, ("cmrc2018_dev.json", "hw7-step15"): 75034,
           ("drcd_dev.json", "overlap128"): 6653, ("drcd_dev.json", "hw7-step15"): 75913}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("setting", ["overlap128", "hw7-step15"])
def test_real_data_oracle_ceiling(bert_tokenizer, shared_data, name, setting):
    path = shared_data / name
    ds = data.load(path, "lenient")
    config = {"overlap128": HF_WINDOWS, "hw7-step15": HW7_WINDOWS}[setting]
    report = oracle_fidelity(ds.examples, bert_tokenizer, config, data.load_references(path), max_answer_len=30)
    want, n = REAL[name], REAL[name]["examples"]
    assert report.examples == len(ds.examples) == n
    assert report.windows == WINDOWS[name, setting]

    def pct(count: int) -> float:
        return 100.0 * count / n

    assert report.em_any_reference == pytest.approx(pct(want["em_any"]), abs=1e-9)
    assert report.em_first_reference == pytest.approx(pct(want["em_first"]), abs=1e-9)
    assert report.f1_any_reference == pytest.approx(want["f1"], abs=1e-9)
    assert report.windowing_only.em_any_reference == pytest.approx(pct(want["windowing_em_any"]), abs=1e-9)
    assert report.windowing_only.em_first_reference == pytest.approx(pct(want["windowing_em_first"]), abs=1e-9)
    assert report.windowing_only.f1_any_reference == 100.0
    assert (report.lost_to_max_answer_len, report.answers_longer_than_max_answer_len) == (want["lost"], want["longer"])
    assert len(report.unreachable) == want["lost"]  # every loss is the length limit's, none is windowing's
    assert {u["reason"] for u in report.unreachable} == {"longer than max_answer_len (30 tokens)"}


# ---------------------------------------------------------------- lengths in tokens (check-data, "auto")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qa_scale.evaluation.oracle import (  # noqa: E402
    answer_token_lengths,
    covering_length,
    length_percentiles,
    question_token_lengths,
)


def test_answer_lengths_are_the_context_tokens_the_decoder_counts(bert_tokenizer):
    ctx = "他出生于2018年的NBA总决赛期间，后来去了北京。"
    exs = [Example("year", "问？", ctx, (Answer("2018年", ctx.index("2018")), Answer("x", 0))),  # first reference only
           Example("inside", "问？", ctx, (Answer("01", ctx.index("2018") + 1),)),  # inside the token '2018'
           Example("chars", "北京在哪里呢？", ctx, (Answer("去了北京", ctx.index("去了")),)),
           Example("none", "问？", ctx)]
    assert answer_token_lengths(exs, bert_tokenizer).tolist() == [2, 1, 4]  # '2018' '年'; the token '2018'; 4 chars
    assert question_token_lengths(exs, bert_tokenizer).tolist() == [2, 2, 7, 2]
    assert answer_token_lengths([], bert_tokenizer).tolist() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=2000), st.sampled_from([50, 90, 99, 99.5, 99.9, 100]))
def test_covering_length_is_the_smallest_observed_length_that_covers(lengths, percentile):
    value = covering_length(lengths, percentile)
    assert value in lengths
    assert sum(n <= value for n in lengths) >= percentile / 100 * len(lengths) - 1e-9
    assert sum(n < value for n in lengths) < percentile / 100 * len(lengths)  # nothing smaller covers


def test_length_percentiles():
    lengths = list(range(1, 1001))
    assert length_percentiles(lengths, (50, 90, 99, 99.9)) == {"count": 1000, "p50": 500, "p90": 900, "p99": 990,
                                                               "p99.9": 999, "max": 1000}
    assert length_percentiles([]) == {"count": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    with pytest.raises(ValueError, match="percentile"):
        covering_length(lengths, 0)
