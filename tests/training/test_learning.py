"""Does a reader fine-tuned from the offline backbone learn to read? The whole offline path on the
project's sample data, as plain processes: vocabulary → masked-LM backbone → QA fine-tuning → dev
EM, compared with trivial baselines computed on the same dev set."""

from __future__ import annotations

import json

import pytest
from cli_runs import qa_scale

from qa_scale import data, synthetic
from qa_scale.evaluation.baselines import trivial_baselines

pytestmark = [pytest.mark.slow]

# The settings of the demo (`qa-scale demo`), with fewer steps: about 2 minutes on 2 cores.
BACKBONE_STEPS, READER_STEPS = 300, 600


def test_reader_fine_tuned_from_the_offline_backbone_is_far_above_trivial(tmp_path):
    paths = synthetic.write_all(synthetic.SampleConfig(
        train_paragraphs=1500, dev_paragraphs=60, test_paragraphs=1, paragraph_chars=(120, 300)), tmp_path / "data")
    qa_scale(["vocab", paths["corpus"], "--out", tmp_path / "tok"], None, tmp_path)
    qa_scale(["backbone", paths["corpus"], "--tokenizer", tmp_path / "tok", "--out", tmp_path / "backbone",
              "--hidden-size", 128, "--layers", 2, "--heads", 4, "--seq-len", 128, "--steps", BACKBONE_STEPS,
              "--lr", 1e-3, "--batch-size", 32], None, tmp_path)
    backbone = json.loads((tmp_path / "backbone" / "summary.json").read_text("utf-8"))
    assert backbone["finished"]

    overrides = {
        "model.name_or_path": tmp_path / "backbone" / "model",
        "data.train_file": paths["squad_train"], "data.dev_file": paths["squad_dev"],
        "data.strategy": "random_answer",
        "data.windows.max_seq_len": 64, "data.windows.max_question_len": 32, "data.windows.doc_overlap": 16,
        "optim.lr": 1e-3, "optim.max_steps": READER_STEPS, "optim.warmup_ratio": 0.06,
        "optim.micro_batch_size": 32, "optim.global_batch_size": 32,
        "run.output_dir": tmp_path / "reader", "run.precision": "fp32", "run.eval_every": READER_STEPS // 2,
        "run.save_every": READER_STEPS, "run.tensorboard": "false", "run.export": "false",
        "decode.max_answer_len": 32,
    }
    qa_scale(["train", *(f"{k}={v}" for k, v in overrides.items())], None, tmp_path)
    summary = json.loads((tmp_path / "reader" / "summary.json").read_text("utf-8"))

    train = data.load(paths["squad_train"], "strict").examples
    dev = data.load(paths["squad_dev"], "strict").examples
    trivial = trivial_baselines(train, dev, data.load_references(paths["squad_dev"]))
    best_trivial = max(b["em"] for b in trivial.values())
    print(f"\nreader dev EM {summary['best_dev_em']:.1f} (F1 {summary['last_dev']['f1']:.1f}) after "
          f"{BACKBONE_STEPS} masked-LM + {READER_STEPS} QA steps "
          f"({backbone['train_seconds'] + summary['train_seconds']:.0f} s of training); trivial: {trivial}")
    assert summary["finished"] and summary["best_dev_em"] >= 20
    assert summary["best_dev_em"] >= 10 * best_trivial
