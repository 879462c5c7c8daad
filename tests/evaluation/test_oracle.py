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
