"""Oracle fidelity: windowing and decoding lose nothing beyond token boundaries."""

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


@pytest.mark.slow
@pytest.mark.parametrize("name,floor", [("cmrc2018_dev.json", 99.8), ("drcd_dev.json", 99.9)])
@pytest.mark.parametrize("config", [HF_WINDOWS, HW7_WINDOWS], ids=["overlap128", "hw7-step15"])
def test_real_data_oracle_ceiling(bert_tokenizer, shared_data, name, floor, config):
    path = shared_data / name
    ds = data.load(path, "lenient")
    report = oracle_fidelity(ds.examples, bert_tokenizer, config, data.load_references(path))
    assert report.examples == len(ds.examples)
    assert report.em_any_reference >= floor, report.unreachable[:10]
